"""Small tensor helpers shared by the model and the losses (neither imports the other).

All resampling in PDFNet is bilinear with ``align_corners=True`` (the official code's ``_upsample_``), fixed here in
one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint


def resize(x: torch.Tensor, size: tuple[int, int] | list[int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``. x: [B,C,h,w] -> [B,C,*size] (x itself when the size is equal)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Resize ``x`` [B,C,h,w] to the spatial size of ``ref`` [*,*,H,W]."""
    return resize(x, ref.shape[-2:])


def normalize_depth(depth: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each sample to [0, 1]. depth: [B,1,H,W] any range -> [B,1,H,W].

    The official code normalises over the whole batch (identical at batch 1); per sample makes a prediction
    independent of its batch-mates. A constant map becomes zeros instead of the official NaNs.
    """
    flat = depth.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    span = flat.amax(dim=1).view(-1, 1, 1, 1) - lo
    return torch.where(span > 0, (depth - lo) / span.clamp_min(torch.finfo(depth.dtype).tiny), torch.zeros_like(depth))


def checkpointed(enabled: bool, fn, *args):
    """``fn(*args)``, recomputed in backward instead of keeping its activations when ``enabled`` and autograd is
    recording (non-reentrant checkpoint; dropout masks are replayed, so gradients are unchanged)."""
    if enabled and torch.is_grad_enabled():
        return torch_checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
