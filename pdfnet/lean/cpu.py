"""What the CPU forms need to know about the machine, decided once when a model is made lean: the heap (glibc) and
the convolution layout that runs fastest on this processor."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim  # noqa: B018 - glibc only; musl has none
    except (OSError, AttributeError):
        _LIBC = None


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere and under torch.compile.

    CPU inference frees many mid-sized tensors between stages; glibc keeps that memory mapped, which shows up as
    resident memory on top of the next stage's peak. Trimming between stages keeps peak RSS close to what is live.
    """
    if _LIBC is not None and not torch.compiler.is_compiling():
        _LIBC.malloc_trim(0)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,W] in channels-last memory (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def nhwc_weight_gradient_is_fast() -> bool:
    """Whether oneDNN has a fast channels-last convolution weight gradient on this CPU (AVX-512). Without it, a
    128->128 3x3 conv's weight gradient at 1024² took 12.0 s channels-last against 2.8 s in the plain layout (AVX2
    EPYC, 2 cores), while forward and input gradient differ by ~20 % and converting a [1,128,1024,1024] map between
    the layouts costs ~0.8 s."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


class ConvLayout:
    """The memory layout the decoder's full-resolution convs run in, decided once for this processor: channels-last
    at inference (oneDNN's fastest forward: a 128-channel 3x3 conv ~0.75x the time, a 128->1 logit head ~0.4x), and
    in training too when the CPU has a fast channels-last weight gradient; otherwise the plain layout in training."""

    def __init__(self, channels_last_in_training: bool | None = None) -> None:
        if channels_last_in_training is None:
            channels_last_in_training = nhwc_weight_gradient_is_fast()
        self.channels_last_in_training = channels_last_in_training

    def plain(self) -> bool:
        """Whether convs run in the plain layout now (autograd recording and no fast channels-last backward)."""
        return torch.is_grad_enabled() and not self.channels_last_in_training

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous() if self.plain() else channels_last(x)
