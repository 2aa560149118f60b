"""Segmentation decoder (4 FSE stages, 6 logit maps) and the auxiliary depth decoder of PDFNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvNormAct, resize, resize_like
from .fusion import FSE

# Feature pyramids are lists [L1, L2, L3, L4, global]: L1 finest, ``global`` at the L4 resolution.
Pyramid = list[torch.Tensor]


def _align_corners_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                              torch.Tensor]:
    """Source taps of a 1-D bilinear ``align_corners=True`` resize: (index0, index1, frac), each [n_out]."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = torch.arange(n_out, device=device, dtype=torch.float64) * scale
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    return i0, i1, (src - i0).float()


def upsample4_conv4(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(resize(x, 4x))`` for a 4x4/stride-4 conv, without building the 16x larger upsampled input.

    x: [B,Cin,H,W] -> [B,Cout,H,W]. Output pixel (i, j) of the strided conv sees upsampled rows 4i..4i+3 and
    columns 4j..4j+3; each of those 16 sub-positions (a, b) is a bilinear sample of ``x`` whose taps are computed
    here, so the conv becomes a sum of 16 1x1 convs over resampled copies of x at the input resolution. Equal to the
    official computation up to float rounding (the official path materialises [B,6,4H,4W]: 400 MB at 1024²).
    """
    b, c, h, w = x.shape
    rows, cols = _align_corners_taps(h, 4 * h, x.device), _align_corners_taps(w, 4 * w, x.device)
    weight = conv.weight.to(x.dtype)  # [Cout, Cin, 4, 4]
    out = None
    for a in range(4):
        r0, r1, rf = (t[a::4] for t in rows)
        xa = torch.lerp(x[:, :, r0, :], x[:, :, r1, :], rf.to(x.dtype)[:, None])
        for bb in range(4):
            c0, c1, cf = (t[bb::4] for t in cols)
            xab = torch.lerp(xa[..., c0], xa[..., c1], cf.to(x.dtype))
            term = F.conv2d(xab, weight[:, :, a:a + 1, bb:bb + 1])
            out = term if out is None else out.add_(term) if not torch.is_grad_enabled() else out + term
    return out + conv.bias.to(x.dtype)[:, None, None]


class SegmentationDecoder(nn.Module):
    """Fuses image, depth and patch pyramids top-down with FSE blocks; returns 6 logit maps.

    image [B,3,H,W], depth3 [B,3,H,W] (depth replicated to 3 channels), pyramids as :data:`Pyramid` ->
    [main [B,1,H,W], side1 [B,1,H/4,W/4], side2 (H/8), side3 (H/16), side4 (H/32), side5 (H/32)]
    (side sizes are those of the patch pyramid; listed for inputs that are multiples of 256).
    """

    def __init__(self, emb_dim: int, variant: str, patch_grid: int = 8, detach_patches: bool = True,
                 raw_channels: int = 3) -> None:
        super().__init__()
        # FSE i works on pyramid level 3 - i (coarse to fine); the two finest levels pool their tokens 2x.
        self.fse = nn.ModuleList(
            FSE(2 * emb_dim, emb_dim, pool=1 if i < 2 else 2, variant=variant, patch_grid=patch_grid,
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

    def forward(self, image: torch.Tensor, depth3: torch.Tensor, img_feats: Pyramid, depth_feats: Pyramid,
                patch_feats: Pyramid) -> list[torch.Tensor]:
        h, w = image.shape[-2:]
        top = patch_feats[4]
        sides = {5: self.heads[5](resize_like(img_feats[4], top) + resize_like(depth_feats[4], top) + top)}
        img, depth, patch = img_feats[4], depth_feats[4], patch_feats[4]
        mix = None
        for stage, level in enumerate((3, 2, 1, 0)):
            img, depth, patch = self.fse[stage](
                torch.cat([resize_like(img, img_feats[level]), img_feats[level]], dim=1),
                torch.cat([resize_like(depth, depth_feats[level]), depth_feats[level]], dim=1),
                torch.cat([resize_like(patch, patch_feats[level]), patch_feats[level]], dim=1),
                sides[level + 2],
            )
            mix = self.level_mixers[level](torch.cat([resize_like(img, patch), resize_like(depth, patch), patch], 1))
            sides[level + 1] = self.heads[level + 1](mix)
        del img, depth, patch

        # Full-resolution detail path: 4x upsample + 4x4/4 conv, fused without materialising the 4x input.
        shallow = self.shallow[1](upsample4_conv4(torch.cat([image, depth3], dim=1), self.shallow[0]))
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        x = self.refine_half(resize(mix, half) + resize(shallow, half))
        x = resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        if not torch.is_grad_enabled():
            x += shallow  # in place: saves a full-resolution [B,E,H,W] tensor at inference
        else:
            x = x + shallow
        del shallow
        main = self.heads[0](self.refine_full(x))
        if main.shape[-2:] != (h, w):
            raise RuntimeError(f"decoder produced {tuple(main.shape[-2:])} for a {h}x{w} input")
        return [main] + [sides[i] for i in range(1, 6)]


class DepthDecoder(nn.Module):
    """Auxiliary depth head (trained with the SiLog loss; not used at inference).

    v2026 (official HEAD shapes): each level is the concatenation [img, depth, patch] (3E channels) and the shallow
    branch sees image and depth (6 channels). v2025.03: the three streams are summed (E channels) and the shallow
    branch sees the image only (3 channels). Returns 5 depth logit maps: [B,1,H/2,W/2], then one per level L1..L4.
    """

    def __init__(self, emb_dim: int, variant: str, raw_channels: int = 3) -> None:
        super().__init__()
        self.concat_streams = variant == "v2026"
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

    def merge_streams(self, img_feats: Pyramid, depth_feats: Pyramid, patch_feats: Pyramid) -> Pyramid:
        """Per level: patch features resized to the image level, then concatenated (v2026) or summed (v2025.03)."""
        merged = []
        for im, de, pa in zip(img_feats, depth_feats, patch_feats):
            pa = resize_like(pa, im)
            merged.append(torch.cat([im, de, pa], dim=1) if self.concat_streams else im + de + pa)
        return merged

    def forward(self, image: torch.Tensor, depth3: torch.Tensor, img_feats: Pyramid, depth_feats: Pyramid,
                patch_feats: Pyramid) -> list[torch.Tensor]:
        l1, l2, l3, l4, glob = self.merge_streams(img_feats, depth_feats, patch_feats)
        d4 = self.blocks[0](torch.cat([glob, l4], dim=1))
        d3 = self.blocks[1](torch.cat([resize_like(d4, l3), l3], dim=1))
        d2 = self.blocks[2](torch.cat([resize_like(d3, l2), l2], dim=1))
        d1 = self.blocks[3](torch.cat([resize_like(d2, l1), l1], dim=1))
        shallow = self.shallow(torch.cat([image, depth3], dim=1) if self.concat_streams else image)
        x = d1 + resize_like(shallow, d1)
        x = self.refine_half(resize(x, (2 * x.shape[-2], 2 * x.shape[-1])))
        x = resize(x + resize_like(shallow, x), (2 * x.shape[-2], 2 * x.shape[-1]))
        x = self.refine_full(x)
        return [self.heads[0](x), self.heads[1](d1), self.heads[2](d2), self.heads[3](d3), self.heads[4](d4)]
