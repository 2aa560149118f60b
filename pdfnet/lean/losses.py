"""CPU form of the SSIM loss's blur: weighted sums of shifted slices, with the blur itself as its backward.

On CPU single-channel convolutions are slow (the 2-D kernel's backward was a third of a training step); eleven
shifted multiply-adds per direction take a few percent of five separable convolutions' time at 1024², forward and
backward. Zero-padded correlation with a symmetric kernel is a symmetric linear map, so its backward is the same blur
of the gradient: nothing is kept, and no per-tap gradient buffers are built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses.terms import SSIMLoss


def shifted_sum_blur(t: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Zero-padded separable blur of t [B,C,H,W] by the 1-D ``taps`` along H then W, as weighted sums of shifted
    slices."""
    pad = len(taps) // 2
    for dim in (-2, -1):
        n = t.shape[dim]
        padded = F.pad(t, (0, 0, pad, pad) if dim == -2 else (pad, pad, 0, 0))
        t = padded.narrow(dim, 0, n) * taps[0]
        for k in range(1, len(taps)):
            t.add_(padded.narrow(dim, k, n), alpha=taps[k])
    return t


class _SymmetricBlur(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
        ctx.taps = taps
        return shifted_sum_blur(t, taps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return shifted_sum_blur(grad, ctx.taps), None


class LeanSSIMLoss(SSIMLoss):
    """:class:`~pdfnet.losses.terms.SSIMLoss` with the blur of the module docstring (the one-pass conv form under
    torch.compile)."""

    def blur(self, t: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return super().blur(t)
        if self.window_taps != self.window_taps[::-1]:
            raise ValueError("the SSIM window must be symmetric")
        return _SymmetricBlur.apply(t, self.window_taps)
