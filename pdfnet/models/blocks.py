"""Small layers shared by the PDFNet components.

All resampling in PDFNet is bilinear with ``align_corners=True`` (the official code's ``_upsample_``), so the helpers
here fix that convention in one place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import nn

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim  # noqa: B018 - glibc only; musl has none
    except (OSError, AttributeError):
        _LIBC = None


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    CPU inference frees many mid-sized tensors between stages; glibc keeps that memory mapped, which shows up as
    resident memory on top of the next stage's peak. Trimming between stages keeps peak RSS close to what is live.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def lean_inference(x: torch.Tensor) -> bool:
    """Whether the CPU inference memory savings apply to tensors like ``x`` (row strips, freeing inputs early,
    heap trimming, the one-hot logit head): CPU tensors, no autograd, and not being traced by torch.compile /
    torch.export, which want one plain graph instead. On GPUs the caching allocator already reuses freed blocks
    and the strip loops would only add kernel launches, so the plain path runs there."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,W] in channels-last memory (a no-op when it already is): the layout in which oneDNN and cuDNN run
    the full-resolution convolutions' forward fastest (on an AVX-512 CPU, a 128-channel 3x3 conv's forward and
    backward took ~0.75x the time, a 128->1 logit head ~0.4x; for training on other CPUs see :func:`conv_layout`)."""
    return x.contiguous(memory_format=torch.channels_last)


@functools.cache
def _cpu_nhwc_weight_grad_is_fast() -> bool:
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def plain_conv_layout(x: torch.Tensor) -> bool:
    """Whether convs on tensors like ``x`` [B,C,H,W] run fastest in the plain (contiguous) layout: when autograd
    records on a CPU without AVX-512. There oneDNN has no fast channels-last weight-gradient kernel: a 128->128 3x3
    conv's weight gradient at 1024² took 12.0 s channels-last against 2.8 s in the plain layout (AVX2 EPYC, 2
    cores), while forward and input gradient differ by ~20 %, and converting a [1,128,1024,1024] map between the
    layouts costs ~0.8 s, so training there stays in the plain layout throughout (the logit heads too). On AVX-512
    CPUs and on GPUs channels-last is the faster layout in both directions."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and not _cpu_nhwc_weight_grad_is_fast()


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,W] in the layout in which the decoder's convs run fastest (see :func:`plain_conv_layout`)."""
    return x.contiguous() if plain_conv_layout(x) else channels_last(x)


def checkpointed(enabled: bool, fn, *args):
    """``fn(*args)``, recomputed in backward instead of keeping its activations when ``enabled`` and autograd is
    recording (non-reentrant checkpoint; dropout masks are replayed, so gradients are unchanged)."""
    if enabled and torch.is_grad_enabled():
        return torch_checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def resize(x: torch.Tensor, size: tuple[int, int] | list[int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (PDFNet's only resampling mode). x: [B,C,h,w] -> [B,C,*size]."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        # F.interpolate to the same size with align_corners=True is the identity; skip the copy.
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Resize ``x`` [B,C,h,w] to the spatial size of ``ref`` [*,*,H,W]."""
    return resize(x, ref.shape[-2:])


def _row_chunks(x: torch.Tensor, dim: int, elements: int = 1 << 18) -> list[slice]:
    """Slices of the axis after the normed one (rows of [B,C,H,W], tokens of [B,N,C]) holding about ``elements``
    values each: per-pixel work done a chunk at a time keeps its float32 temporaries small, and at 1 MiB of float32
    they stay in the CPU cache between the chunk's dozen elementwise ops (a [1,128,512,512] norm's forward and
    backward: 1.1 s in 32 MiB chunks, 0.24 s in 1 MiB chunks, on the development machine)."""
    axis = 2 if dim == 1 else 1
    n = x.shape[axis]
    step = max(1, min(n, elements * n // max(1, x.numel())))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _along(x: torch.Tensor, dim: int, rows: slice) -> torch.Tensor:
    return x[:, :, rows] if dim == 1 else x[:, rows]


class _RMSNormFunction(torch.autograd.Function):
    """Training path of RMSNorm (optionally fused with the SiLU after it) that keeps only its input (in the input
    dtype) and the per-pixel 1/rms for backward, recomputing the rest. Statistics are float32, the output has the
    input's dtype, so under bf16 autocast the activations stay bf16 (autograd's version of the same arithmetic kept
    two float32 copies of every normed map: 4x the bytes of the bf16 input). Forward and backward run over chunks of
    rows, so their float32 temporaries stay small even for [B,128,1024,1024] maps.

    Forward arithmetic is :meth:`RMSNorm.forward`'s plain autograd expression (same ops, same order; bitwise equal
    for maps that fit one chunk, last-bit differences in the channel mean otherwise).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool) -> torch.Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        w = weight.view(-1, 1, 1) if dim == 1 else weight
        out = torch.empty_like(x)
        stats_shape = list(x.shape)
        stats_shape[dim] = 1
        inv_rms = x.new_empty(stats_shape, dtype=compute)
        for rows in _row_chunks(x, dim):
            x32 = _along(x, dim, rows).to(compute)
            inv = torch.rsqrt(x32.pow(2).mean(dim=dim, keepdim=True) + eps)
            y = w * (x32 * inv).type_as(x)
            _along(out, dim, rows).copy_(F.silu(y) if silu else y)
            _along(inv_rms, dim, rows).copy_(inv)
        ctx.save_for_backward(x, weight, inv_rms)
        ctx.dim, ctx.silu = dim, silu
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        dim = ctx.dim
        compute = inv_rms.dtype
        w = (weight.view(-1, 1, 1) if dim == 1 else weight).to(compute)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if want_x else None
        grad_w = torch.zeros(weight.shape, dtype=compute, device=weight.device) if want_w else None
        for rows in _row_chunks(x, dim):
            inv = _along(inv_rms, dim, rows)
            normed = (_along(x, dim, rows).to(compute) * inv).type_as(x).to(compute)
            grad = _along(grad_out, dim, rows).to(compute)
            if ctx.silu:
                y = w * normed
                sig = torch.sigmoid(y)
                grad = grad * sig * (1 + y * (1 - sig))
                del y, sig
            if want_w:
                reduce_dims = [d for d in range(grad.ndim) if d != (dim % grad.ndim)]
                grad_w += (grad * normed).sum(dim=reduce_dims)
            if want_x:
                grad_normed = grad * w
                # d/dx of x * rsqrt(mean(x^2)): inv_rms * (g - normed * mean(g * normed)) over the normed dimension.
                _along(grad_x, dim, rows).copy_(
                    inv * (grad_normed - normed * (grad_normed * normed).mean(dim=dim, keepdim=True)))
        return grad_x, grad_w.to(weight.dtype) if want_w else None, None, None, None


def rms_norm_train(x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool = False) -> torch.Tensor:
    """RMSNorm over ``dim`` (then SiLU when ``silu``) with the memory-lean backward of :class:`_RMSNormFunction`."""
    if dim == 1 and x.ndim == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        # Channels-last maps are normed as the contiguous [B,H,W,C] they are in memory: row chunks are then
        # contiguous blocks (strided chunk copies of the [B,C,H,W] view cost as much as the norm itself).
        return _RMSNormFunction.apply(x.permute(0, 2, 3, 1), weight, -1, eps, silu).permute(0, 3, 1, 2)
    return _RMSNormFunction.apply(x, weight, dim, eps, silu)


class RMSNorm(nn.Module):
    """Root-mean-square norm over channels, computed in float32.

    ``channels_first=True`` normalises dim 1 of ``[B,C,H,W]``; otherwise the last dim of ``[B,N,C]``.
    eps = 1e-6 as the official code.
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.channels_first = channels_first
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``inplace=True`` (only honoured without autograd) lets the norm overwrite ``x``, which the caller owns."""
        dim = 1 if self.channels_first else -1
        if torch.is_grad_enabled():
            return rms_norm_train(x, self.weight, dim, self.eps)
        x32 = x.float()
        weight = self.weight[:, None, None] if self.channels_first else self.weight
        # Inference: the same arithmetic with fewer full-size temporaries: the mean square comes from a norm
        # reduction (no x**2 tensor), and x32 is overwritten when it is a private copy or the caller allows it.
        inv_rms = torch.linalg.vector_norm(x32, dim=dim, keepdim=True).square_().div_(x32.shape[dim]).add_(
            self.eps).rsqrt_()
        out = x32.mul_(inv_rms) if (inplace or x32 is not x) else x32 * inv_rms
        return out.to(x.dtype).mul_(weight.to(x.dtype))


class ConvNormAct(nn.Sequential):
    """3x3 conv -> RMSNorm (channels) -> SiLU: the official ``make_crs`` unit. [B,Cin,H,W] -> [B,Cout,H,W].

    Kept as a Sequential (children ``0``, ``1``, ``2``) because that is the layout of the official state dict.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1), RMSNorm(out_dim), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self[0](x))

    def norm_act(self, y: torch.Tensor) -> torch.Tensor:
        """The norm and SiLU of the unit on a conv output ``y`` (the forward without the conv)."""
        norm = self[1]
        if torch.is_grad_enabled():
            return rms_norm_train(y, norm.weight, 1, norm.eps, silu=True)
        # In-place norm and activation save full-size tensors at inference (y is the caller's private conv output).
        return F.silu(norm(y, inplace=True), inplace=True)


def norm_act_head(unit: ConvNormAct, head: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``head(unit.norm_act(y))``: a logit head on a ConvNormAct unit whose conv output is ``y``. In training the
    activation the head reads is recomputed in backward from ``y`` (which the norm keeps anyway) instead of being
    kept: one full-resolution [B,E,H,W] map less per head (512 MiB at 1024² in float32), for an elementwise norm
    and a one-channel conv recomputed."""
    def run(t: torch.Tensor) -> torch.Tensor:
        return head(conv_layout(unit.norm_act(t)))

    return checkpointed(True, run, y)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward without biases: ``w2(silu(w1 x) * w3 x)``. x: [..., dim]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
