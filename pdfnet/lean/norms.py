"""CPU forms of the norms: row-chunked training norms (cache-sized float32 temporaries) and in-place inference norms.

The reference :class:`~pdfnet.models.blocks.RMSNorm` works on the whole map at once. On a CPU the dozen elementwise
passes of a norm over a [B,128,1024,1024] float32 map each stream 512 MiB through memory; done a chunk of rows at a
time (1 MiB of float32), the temporaries stay in the cache between the passes (a [1,128,512,512] norm's forward and
backward: 1.1 s in 32 MiB chunks, 0.24 s in 1 MiB chunks, on a 2-core development machine). At inference the norm
overwrites its private input instead of allocating full-size temporaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.blocks import ConvNormAct, RMSNorm, rms_norm

CHUNK_ELEMENTS = 1 << 18  # 1 MiB of float32 per chunk


def row_chunks(x: torch.Tensor, dim: int, elements: int = CHUNK_ELEMENTS) -> list[slice]:
    """Slices of the axis after the normed one (rows of [B,C,H,W], tokens of [B,N,C]) holding about ``elements``
    values each."""
    axis = 2 if dim == 1 else 1
    n = x.shape[axis]
    step = max(1, min(n, elements * n // max(1, x.numel())))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _along(x: torch.Tensor, dim: int, rows: slice) -> torch.Tensor:
    return x[:, :, rows] if dim == 1 else x[:, rows]


class _ChunkedRMSNorm(torch.autograd.Function):
    """:func:`pdfnet.models.blocks.rms_norm` (same arithmetic, same saved tensors: x in its dtype and the per-position
    1/rms) computed a chunk of rows at a time, forward and backward. Bitwise equal to the one-pass form for maps that
    fit one chunk; last-bit differences in the channel mean otherwise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool) -> torch.Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        w = weight.view(-1, 1, 1) if dim == 1 else weight
        out = torch.empty_like(x)
        stats_shape = list(x.shape)
        stats_shape[dim] = 1
        inv_rms = x.new_empty(stats_shape, dtype=compute)
        for rows in row_chunks(x, dim):
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
        for rows in row_chunks(x, dim):
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
                _along(grad_x, dim, rows).copy_(
                    inv * (grad_normed - normed * (grad_normed * normed).mean(dim=dim, keepdim=True)))
        return grad_x, grad_w.to(weight.dtype) if want_w else None, None, None, None


def chunked_rms_norm(x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool = False) -> torch.Tensor:
    """:func:`~pdfnet.models.blocks.rms_norm` a chunk of rows at a time. Channels-last maps are normed as the
    contiguous [B,H,W,C] they are in memory (strided chunk copies of the [B,C,H,W] view cost as much as the norm).
    Under torch.compile the one-pass form runs (inductor fuses it; the chunk loop would unroll)."""
    if torch.compiler.is_compiling():
        return rms_norm(x, weight, dim, eps, silu)
    if dim == 1 and x.ndim == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return _ChunkedRMSNorm.apply(x.permute(0, 2, 3, 1), weight, -1, eps, silu).permute(0, 3, 1, 2)
    return _ChunkedRMSNorm.apply(x, weight, dim, eps, silu)


def inplace_rms_norm(x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, own_input: bool) -> torch.Tensor:
    """Inference RMSNorm with fewer full-size temporaries: the mean square from a norm reduction (no x² tensor), and
    the float32 copy of x (or x itself when ``own_input``: the caller's private map) overwritten in place."""
    x32 = x.float()
    w = weight[:, None, None] if dim == 1 else weight
    inv_rms = torch.linalg.vector_norm(x32, dim=dim, keepdim=True).square_().div_(x32.shape[dim]).add_(eps).rsqrt_()
    out = x32.mul_(inv_rms) if (own_input or x32 is not x) else x32 * inv_rms
    return out.to(x.dtype).mul_(w.to(x.dtype))


def _inference(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


class LeanRMSNorm(RMSNorm):
    """:class:`~pdfnet.models.blocks.RMSNorm`: row-chunked in training, in place at inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inference(x):
            return inplace_rms_norm(x, self.weight, self.dim, self.eps, own_input=False)
        return chunked_rms_norm(x, self.weight, self.dim, self.eps)


class LeanConvNormAct(ConvNormAct):
    """:class:`~pdfnet.models.blocks.ConvNormAct` with the norm and SiLU row-chunked in training and in place at
    inference (the conv output is the unit's own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self[0](x))

    def norm_act(self, y: torch.Tensor) -> torch.Tensor:
        """The norm and SiLU of the unit on a conv output ``y``."""
        norm = self[1]
        if _inference(y):
            return F.silu(inplace_rms_norm(y, norm.weight, 1, norm.eps, own_input=True), inplace=True)
        return chunked_rms_norm(y, norm.weight, 1, norm.eps, silu=True)
