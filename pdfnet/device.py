"""Devices and numeric precision: which device a process uses, which reduced precision it can run natively, and the
CUDA backend switches. One home for these decisions, used by training, inference and depth preparation alike."""

from __future__ import annotations

import contextlib
import warnings

import torch


class DeviceError(RuntimeError):
    """A device that does not exist here; the message says which one to ask for instead."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names as torch spells them (``cuda:1``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here: use cpu "
                          "(--device cpu, or --opt train.device=cpu for training)")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware. On CUDA that is compute capability 8.0+ (Ampere and
    newer): ``torch.cuda.is_bf16_supported()`` alone also says yes on V100/T4, where bf16 is emulated and slow.
    On CPU: AVX512-BF16 or AMX (otherwise oneDNN emulates it, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def half_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision for ``--half`` and ``train.amp: bf16`` on ``device``: bfloat16 where it is native,
    float16 on GPUs without native bfloat16 (V100, T4)."""
    if device.type == "cuda" and not native_bf16(device):
        return torch.float16
    return torch.bfloat16


def cpu_emulates_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU without native bfloat16 (no AVX512-BF16 or AMX), where oneDNN emulates it:
    slower than float32 and less exact, so reduced precision runs float32 there."""
    return device.type == "cpu" and not native_bf16(device)


def autocast(device: torch.device, half: bool) -> contextlib.AbstractContextManager:
    """Autocast to :func:`half_dtype` when ``half``; otherwise a no-op (float32). On a CPU without native bfloat16
    (no AVX512-BF16 or AMX) ``half`` runs in float32 instead, with a one-time notice: emulated bf16 is slower than
    float32 there and less exact."""
    if not half:
        return contextlib.nullcontext()
    if cpu_emulates_bf16(device):
        _notice_once("--half: this CPU has no native bfloat16 (AVX512-BF16/AMX); running in float32")
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=half_dtype(device))


_NOTICES: set[str] = set()


def _notice_once(text: str) -> None:
    if text not in _NOTICES:
        _NOTICES.add(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def training_amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None = float32). ``bf16`` falls back to float16 (with a
    loss scaler) on GPUs without native bfloat16."""
    if amp == "none":
        return None
    if amp == "fp16":
        return torch.float16
    return half_dtype(device)


def configure_cuda_backends(device: torch.device, tf32: bool) -> None:
    """Fast CUDA defaults for training at a fixed input size: cuDNN autotuning (``benchmark``) and,
    when ``tf32``, TensorFloat-32 for float32 matmuls and convolutions (Ampere+; ~1e-3 relative rounding, the
    precision PyTorch itself recommends for training). No effect on other devices."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
