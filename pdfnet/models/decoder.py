"""Segmentation decoder (4 fusion stages, 6 logit maps) and the auxiliary depth decoder of PDFNet."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import checkpointed, resize, resize_like
from ..registry import FUSIONS
from ..variants import official_version
from .blocks import ConvNormAct

# Feature pyramids are lists [L1, L2, L3, L4, global]: L1 finest, ``global`` at the L4 resolution.
Pyramid = list[torch.Tensor]


def upsample_conv(conv: nn.Conv2d, x: torch.Tensor, factor: int) -> torch.Tensor:
    """``conv(resize(x, factor x))``: the official shallow branch (4x upsample, then a 4x4/stride-4 conv back to the
    input size). The upsampled input is recomputed in backward instead of kept: the conv's weight gradient would
    otherwise keep [B,C,4H,4W] (805 MB at 1024², batch 2, float32) for a cheap resize."""
    def run(t: torch.Tensor) -> torch.Tensor:
        return conv(resize(t, (factor * t.shape[-2], factor * t.shape[-1])))

    return checkpointed(True, run, x)


class SegmentationDecoder(nn.Module):
    """Fuses image, depth and patch pyramids top-down with fusion blocks (FSE); returns 6 logit maps.

    image [B,3,H,W], depth3 [B,3,H,W] (depth replicated to 3 channels), pyramids as :data:`Pyramid` ->
    [main [B,1,H,W], side1 [B,1,H/4,W/4], side2 (H/8), side3 (H/16), side4 (H/32), side5 (H/32)]
    (side sizes are those of the patch pyramid; listed for inputs that are multiples of 256).
    """

    def __init__(self, emb_dim: int, variant: str, patch_grid: int = 8, detach_patches: bool = True,
                 raw_channels: int = 3, fusion: str = "fse") -> None:
        super().__init__()
        block = FUSIONS.get(fusion)
        # Fusion stage i works on pyramid level 3 - i (coarse to fine); the two finest levels pool their tokens 2x.
        # (Named ``fse`` after the paper's block: the official checkpoints' key layout.)
        self.fse = nn.ModuleList(
            block(2 * emb_dim, emb_dim, pool=1 if i < 2 else 2, variant=variant, patch_grid=patch_grid,
                  detach_patches=detach_patches) for i in range(4)
        )
        self.shallow = nn.Sequential(nn.Conv2d(2 * raw_channels, emb_dim, kernel_size=4, stride=4),
                                     ConvNormAct(emb_dim, emb_dim))
        self.refine_half = nn.Sequential(ConvNormAct(emb_dim, emb_dim))
        self.refine_full = nn.Sequential(ConvNormAct(emb_dim, emb_dim))
        # level_mixers[i] mixes the three streams at pyramid level i (index = official channel_mix index).
        self.level_mixers = nn.ModuleList(ConvNormAct(3 * emb_dim, emb_dim) for _ in range(4))
        # heads[0]: main output; heads[i]: side_i.
        self.heads = nn.ModuleList(nn.Conv2d(emb_dim, 1, 3, padding=1) for _ in range(6))
        self.grad_checkpointing = False  # recompute each fusion stage and the full-resolution path in backward

    def fuse_level(self, stage: int, level: int, img: torch.Tensor, depth: torch.Tensor, patch: torch.Tensor,
                   img_level: torch.Tensor, depth_level: torch.Tensor, patch_level: torch.Tensor,
                   prev_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Fusion stage ``stage`` on pyramid level ``level``: (img, depth, patch, mixed level, side logits)."""
        img, depth, patch = self.fse[stage](
            torch.cat([resize_like(img, img_level), img_level], dim=1),
            torch.cat([resize_like(depth, depth_level), depth_level], dim=1),
            torch.cat([resize_like(patch, patch_level), patch_level], dim=1),
            prev_logits,
        )
        mix = self.level_mixers[level](torch.cat([resize_like(img, patch), resize_like(depth, patch), patch], 1))
        return img, depth, patch, mix, self.heads[level + 1](mix)

    def full_resolution(self, image: torch.Tensor, depth3: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """Main logits [B,1,H,W] from the finest mixed level ``mix`` [B,E,H/4,W/4] and full-resolution detail:
        shallow features of the raw input, summed with ``mix`` at half resolution, refined, then at full
        resolution."""
        shallow = self.shallow[1](upsample_conv(self.shallow[0], torch.cat([image, depth3], dim=1), 4))
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        x = self.refine_half(resize(mix, half) + resize(shallow, half))
        x = self.refine_full(resize_like(x, shallow) + shallow)
        return self.heads[0](x)

    def decode_levels(self, img_feats: Pyramid, depth_feats: Pyramid,
                      patch_feats: Pyramid) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The four fusion stages, coarse to fine: ([side1..side5] logits, the finest mixed level [B,E,H/4,W/4])."""
        top = patch_feats[4]
        sides = {5: self.heads[5](resize_like(img_feats[4], top) + resize_like(depth_feats[4], top) + top)}
        img, depth, patch = img_feats[4], depth_feats[4], patch_feats[4]
        mix = None
        for stage, level in enumerate((3, 2, 1, 0)):
            img, depth, patch, mix, sides[level + 1] = checkpointed(
                self.grad_checkpointing, self.fuse_level, stage, level, img, depth, patch, img_feats[level],
                depth_feats[level], patch_feats[level], sides[level + 2])
        return [sides[i] for i in range(1, 6)], mix

    def forward(self, image: torch.Tensor, depth3: torch.Tensor, img_feats: Pyramid, depth_feats: Pyramid,
                patch_feats: Pyramid) -> list[torch.Tensor]:
        sides, mix = self.decode_levels(img_feats, depth_feats, patch_feats)
        return [checkpointed(self.grad_checkpointing, self.full_resolution, image, depth3, mix)] + sides


class DepthDecoder(nn.Module):
    """Auxiliary depth head (trained with the SiLog loss; not used at inference).

    Each level merges the three streams (concatenated in v2026, summed in v2025.03: see :mod:`pdfnet.variants`),
    decodes top-down, and adds full-resolution detail as the segmentation decoder does. Returns 5 depth logit maps:
    [B,1,H,W], then one per level L1..L4.
    """

    def __init__(self, emb_dim: int, variant: str, raw_channels: int = 3) -> None:
        super().__init__()
        self.concat_streams = official_version(variant).depth_decoder_concat
        level_dim = 3 * emb_dim if self.concat_streams else emb_dim
        self.blocks = nn.ModuleList(
            [nn.Sequential(ConvNormAct(2 * level_dim, 2 * emb_dim), ConvNormAct(2 * emb_dim, emb_dim))]
            + [nn.Sequential(ConvNormAct(emb_dim + level_dim, 2 * emb_dim), ConvNormAct(2 * emb_dim, emb_dim))
               for _ in range(3)]
        )
        shallow_in = 2 * raw_channels if self.concat_streams else raw_channels
        self.shallow = nn.Conv2d(shallow_in, emb_dim, kernel_size=3, padding=1)
        self.refine_half = ConvNormAct(emb_dim, emb_dim)
        self.refine_full = ConvNormAct(emb_dim, emb_dim)
        self.heads = nn.ModuleList(nn.Conv2d(emb_dim, 1, 3, padding=1) for _ in range(5))
        self.grad_checkpointing = False  # recompute the full-resolution tail in backward

    def merge_streams(self, img_feats: Pyramid, depth_feats: Pyramid, patch_feats: Pyramid) -> Pyramid:
        """Per level: patch features resized to the image level, then concatenated (v2026) or summed (v2025.03)."""
        merged = []
        for im, de, pa in zip(img_feats, depth_feats, patch_feats):
            pa = resize_like(pa, im)
            merged.append(torch.cat([im, de, pa], dim=1) if self.concat_streams else im + de + pa)
        return merged

    def full_resolution(self, image: torch.Tensor, depth3: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        """The finest depth logits [B,1,H,W] from the L1 decoding d1 and the full-resolution shallow features."""
        shallow = self.shallow(torch.cat([image, depth3], dim=1) if self.concat_streams else image)
        x = d1 + resize_like(shallow, d1)
        x = self.refine_half(resize(x, (2 * x.shape[-2], 2 * x.shape[-1])))
        x = resize(x + resize_like(shallow, x), (2 * x.shape[-2], 2 * x.shape[-1]))
        return self.heads[0](self.refine_full(x))

    def forward(self, image: torch.Tensor, depth3: torch.Tensor, img_feats: Pyramid, depth_feats: Pyramid,
                patch_feats: Pyramid) -> list[torch.Tensor]:
        l1, l2, l3, l4, glob = self.merge_streams(img_feats, depth_feats, patch_feats)
        d4 = self.blocks[0](torch.cat([glob, l4], dim=1))
        d3 = self.blocks[1](torch.cat([resize_like(d4, l3), l3], dim=1))
        d2 = self.blocks[2](torch.cat([resize_like(d3, l2), l2], dim=1))
        d1 = self.blocks[3](torch.cat([resize_like(d2, l1), l1], dim=1))
        full = checkpointed(self.grad_checkpointing, self.full_resolution, image, depth3, d1)
        return [full, self.heads[1](d1), self.heads[2](d2), self.heads[3](d3), self.heads[4](d4)]
