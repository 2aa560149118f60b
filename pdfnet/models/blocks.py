"""Small layers shared by the PDFNet components: RMSNorm, the conv-norm-SiLU unit, SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _RMSNorm(torch.autograd.Function):
    """``w * (x * rsqrt(mean(x², dim) + eps)).type_as(x)`` over ``dim``, then SiLU when ``silu``: the official
    arithmetic (statistics in float32, the normed map in x's dtype, then the weight), with the output in x's dtype.

    The backward is written out so that only x (in its own dtype: bf16 under autocast) and the per-position 1/rms are
    kept; autograd's version of the same expression keeps two float32 copies of x and, with the SiLU, the output.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # float32, or float64 for float64 input
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=dim, keepdim=True) + eps)
        # The weight is float32: the product is rounded back to x's dtype, so bf16 activations stay bf16.
        y = (_weight_along(weight, dim, x.ndim) * (x32 * inv_rms).type_as(x)).to(x.dtype)
        ctx.save_for_backward(x, weight, inv_rms)
        ctx.dim, ctx.silu = dim, silu
        return F.silu(y) if silu else y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        compute = inv_rms.dtype
        w = _weight_along(weight, ctx.dim, x.ndim).to(compute)
        normed = (x.to(compute) * inv_rms).type_as(x).to(compute)
        grad = grad_out.to(compute)
        if ctx.silu:
            y = w * normed
            sig = torch.sigmoid(y)
            grad = grad * sig * (1 + y * (1 - sig))
        reduce = [d for d in range(x.ndim) if d != ctx.dim % x.ndim]
        grad_w = (grad * normed).sum(dim=reduce).to(weight.dtype)
        g = grad * w
        # d/dx of x * rsqrt(mean(x²)): inv_rms * (g - normed * mean(g * normed)) along the normed dimension.
        grad_x = inv_rms * (g - normed * (g * normed).mean(dim=ctx.dim, keepdim=True))
        return grad_x.to(x.dtype), grad_w, None, None, None


def _weight_along(weight: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """The per-channel weight shaped to broadcast along ``dim`` of an ``ndim``-d tensor."""
    return weight.view(-1, *[1] * (ndim - 1 - dim % ndim))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, dim: int, eps: float, silu: bool = False) -> torch.Tensor:
    """RMSNorm of ``x`` over ``dim`` with per-channel ``weight`` (then SiLU when ``silu``); see :class:`_RMSNorm`."""
    return _RMSNorm.apply(x, weight, dim, eps, silu)


class RMSNorm(nn.Module):
    """Root-mean-square norm over channels, statistics in float32; eps = 1e-6 as the official code.

    ``channels_first=True`` normalises dim 1 of ``[B,C,H,W]``; otherwise the last dim of ``[B,N,C]``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.channels_first = channels_first
        self.weight = nn.Parameter(torch.ones(dim))

    @property
    def dim(self) -> int:
        return 1 if self.channels_first else -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.dim, self.eps)


class ConvNormAct(nn.Sequential):
    """3x3 conv -> RMSNorm (channels) -> SiLU: the official ``make_crs`` unit. [B,Cin,H,W] -> [B,Cout,H,W].

    A Sequential (children ``0``, ``1``, ``2``) because that is the layout of the official state dict; the norm and
    the SiLU run as one step.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1), RMSNorm(out_dim), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, _ = self
        return rms_norm(conv(x), norm.weight, 1, norm.eps, silu=True)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward without biases: ``w2(silu(w1 x) * w3 x)``. x: [..., dim]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
