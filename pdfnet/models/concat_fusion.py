"""Ablation of the fusion block: concatenation + conv in place of FSE (no BIS, no patch weighting, no cross-attention).

``model.fusion: concat`` (configs/examples/ablation_concat_fusion.yaml). It answers "how much do BIS and CoA add
over simply mixing the three streams?" with the rest of PDFNet unchanged; the streams are still gated by the previous
prediction, as in FSE.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import resize_like
from ..registry import FUSIONS
from .blocks import ConvNormAct


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """img [B,Ci,hi,wi], depth [B,Cd,hd,wd], patch [B,Cp,hp,wp], prev_logits [B,1,h,w]
    -> (img [B,E,hi,wi], depth [B,E,hd,wd], patch [B,E,hp,wp]): each stream projected, then the image stream mixed
    with the other two (resized to it) by a conv over their concatenation."""

    def __init__(self, in_dim: int, emb_dim: int, pool: int, variant: str, patch_grid: int = 8,
                 detach_patches: bool = True) -> None:
        super().__init__()
        self.detach_patches = detach_patches
        self.img_proj = ConvNormAct(in_dim, emb_dim)
        self.depth_proj = ConvNormAct(in_dim, emb_dim)
        self.patch_proj = ConvNormAct(in_dim, emb_dim)
        self.mix = ConvNormAct(3 * emb_dim, emb_dim)

    def forward(self, img: torch.Tensor, depth: torch.Tensor, patch: torch.Tensor,
                prev_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = prev_logits.sigmoid()
        if self.detach_patches:
            patch = patch.detach()
        img = self.img_proj(img * resize_like(probs, img))
        depth = self.depth_proj(depth * resize_like(probs, depth))
        patch = self.patch_proj(patch * resize_like(probs, patch))
        img = img + self.mix(torch.cat([img, resize_like(depth, img), resize_like(patch, img)], dim=1))
        return img, depth, patch
