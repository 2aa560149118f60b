"""Segmentation decoder (4 FSE stages, 6 logit maps) and the auxiliary depth decoder of PDFNet."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    ConvNormAct,
    channels_last,
    checkpointed,
    lean_inference,
    norm_act_head,
    release_freed_memory,
    resize,
    resize_like,
)
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


def resize_rows(x: torch.Tensor, size: tuple[int, int], row_start: int, row_stop: int) -> torch.Tensor:
    """Rows [row_start, row_stop) of ``resize(x, size)`` (bilinear, align_corners=True) without the full resize.

    x: [B,C,h,w] -> [B,C,row_stop-row_start,size[1]], in x's memory format. Rows are blended here from their two
    source rows; columns go through F.interpolate (with the row count unchanged, its row mapping is the identity).
    Equal to the full resize up to float rounding.
    """
    i0, i1, frac = (t[row_start:row_stop] for t in _align_corners_taps(x.shape[-2], size[0], x.device))
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        nhwc = x.permute(0, 2, 3, 1)  # gather whole rows of the channels-last memory
        rows = torch.lerp(nhwc.index_select(1, i0), nhwc.index_select(1, i1), frac.to(x.dtype).view(1, -1, 1, 1))
        rows = rows.permute(0, 3, 1, 2)
    else:
        rows = torch.lerp(x.index_select(2, i0), x.index_select(2, i1), frac.to(x.dtype).view(1, 1, -1, 1))
    return F.interpolate(rows, size=(rows.shape[2], size[1]), mode="bilinear", align_corners=True)


def upsample4_conv4(x: torch.Tensor, conv: nn.Conv2d, strip_rows: int = 64) -> torch.Tensor:
    """``conv(resize(x, 4x))`` for a 4x4/stride-4 conv, computed in strips of output rows.

    x: [B,Cin,H,W] -> [B,Cout,H,W]. Output rows [i, j) of the strided conv only see upsampled rows [4i, 4j), so each
    strip upsamples just those rows and runs the same conv: the official arithmetic without materialising the whole
    [B,Cin,4H,4W] input (400 MB at 1024²). The result is channels-last (the fast layout for the full-resolution
    convs that follow).
    """
    if torch.is_grad_enabled() and not torch.compiler.is_compiling() and conv.stride == (4, 4) \
            and conv.kernel_size == (4, 4) and conv.padding == (0, 0):
        return _Upsample4Conv4.apply(x, conv.weight, conv.bias, strip_rows)
    if not lean_inference(x):
        return channels_last(torch.cat([conv(channels_last(strip)) for _, _, strip in _upsampled_strips(x, strip_rows)],
                                       dim=2))
    b, _, h, w = x.shape
    out = torch.empty(b, conv.out_channels, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    for start, stop, strip in _upsampled_strips(x, strip_rows):
        out[:, :, start:stop] = conv(channels_last(strip))
    return out


def _upsampled_strips(x: torch.Tensor, strip_rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(i, j, rows [4i, 4j) of the 4x upsampled x) for the row strips [i, j) of ``strip_rows`` rows of x, one at a
    time."""
    h, w = x.shape[-2:]
    for start in range(0, h, strip_rows):
        stop = min(h, start + strip_rows)
        yield start, stop, resize_rows(x, (4 * h, 4 * w), 4 * start, 4 * stop)


class _Upsample4Conv4(torch.autograd.Function):
    """Training form of :func:`upsample4_conv4`: keeps only x for backward, not the upsampled strips the conv read
    ([B,Cin,4H,4W] in all: 400 MB at 1024² in float32); backward upsamples each strip again (cheap) for the weight
    gradient. The input gradient (the image's, not normally wanted) is computed through autograd on each strip."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                strip_rows: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.strip_rows, ctx.has_bias = strip_rows, bias is not None
        with torch.no_grad():  # autocast, when active, picks the conv's dtype as for the module
            out = torch.cat([F.conv2d(channels_last(strip), weight, bias, stride=4)
                             for _, _, strip in _upsampled_strips(x, strip_rows)], dim=2)
        ctx.dtype = out.dtype
        return channels_last(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        grad_x = torch.zeros_like(x) if want_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        for start, stop, strip in _upsampled_strips(x, ctx.strip_rows):
            g = grad[:, :, start:stop].to(ctx.dtype)
            if want_w:
                grad_w += torch.nn.grad.conv2d_weight(channels_last(strip.to(ctx.dtype)), weight.shape, g,
                                                      stride=4).float()
            if want_x:
                with torch.enable_grad():
                    x_ = x.detach().requires_grad_()
                    piece = resize_rows(x_, (4 * x.shape[2], 4 * x.shape[3]), 4 * start, 4 * stop)
                    (gx,) = torch.autograd.grad(F.conv2d(piece.to(ctx.dtype), weight.to(ctx.dtype), stride=4), x_, g)
                grad_x += gx
        grad_b = grad.float().sum(dim=(0, 2, 3)).to(weight.dtype) if want_b and ctx.has_bias else None
        return grad_x, grad_w.to(weight.dtype) if want_w else None, grad_b, None


def conv_rows_inplace_(x: torch.Tensor, fn: nn.Module, halo: int = 1, strip_rows: int = 128) -> torch.Tensor:
    """Apply a shape-preserving local op ``fn`` (receptive radius ``halo`` rows) to x [B,C,H,W] in place, strip by
    strip. Each strip's result is written back only after the next strip has read the rows it shares with it, so no
    input rows need copying. Inference only; returns x."""
    h = x.shape[2]
    if strip_rows < halo:
        raise ValueError(f"strip_rows {strip_rows} must be >= halo {halo}")
    pending = None
    for start in range(0, h, strip_rows):
        stop = min(h, start + strip_rows)
        lo = max(0, start - halo)
        y = fn(x[:, :, lo:min(h, stop + halo)])[:, :, start - lo:stop - lo]
        if pending is not None:
            x[:, :, pending[0]:pending[1]] = pending[2]
        pending = (start, stop, y)
    if pending is not None:
        x[:, :, pending[0]:pending[1]] = pending[2]
    return x


def conv3x3_to_few(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 3x3/pad-1 conv with few output channels (a logit head) as a 1x1 conv to the 9 taps, then a one-hot 3x3 sum.

    Same result as ``conv(x)`` up to summation order; oneDNN is slow for 1-channel outputs on wide inputs.
    x: [B,C,H,W] -> [B,O,H,W].
    """
    out_ch, in_ch, kh, kw = conv.weight.shape
    taps = conv.weight.permute(0, 2, 3, 1).reshape(out_ch * kh * kw, in_ch, 1, 1).to(x.dtype)
    per_tap = F.conv2d(x, taps)  # [B, O*9, H, W]
    gather = torch.zeros(out_ch, out_ch * kh * kw, kh, kw, dtype=x.dtype, device=x.device)
    for o in range(out_ch):
        for k in range(kh * kw):
            gather[o, o * kh * kw + k, k // kw, k % kw] = 1
    return F.conv2d(per_tap, gather, conv.bias.to(x.dtype) if conv.bias is not None else None, padding=1)


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
        self.grad_checkpointing = False  # recompute each FSE stage and the full-resolution path in backward

    def _fuse_level(self, stage: int, level: int, img: torch.Tensor, depth: torch.Tensor, patch: torch.Tensor,
                    img_level: torch.Tensor, depth_level: torch.Tensor, patch_level: torch.Tensor,
                    prev_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """FSE stage ``stage`` on pyramid level ``level``: (img, depth, patch, mixed level, side logits)."""
        img, depth, patch = self.fse[stage](
            torch.cat([resize_like(img, img_level), img_level], dim=1),
            torch.cat([resize_like(depth, depth_level), depth_level], dim=1),
            torch.cat([resize_like(patch, patch_level), patch_level], dim=1),
            prev_logits,
        )
        mix = self.level_mixers[level](torch.cat([resize_like(img, patch), resize_like(depth, patch), patch], 1))
        return img, depth, patch, mix, self.heads[level + 1](mix)

    def _shallow_features(self, image: torch.Tensor, depth3: torch.Tensor) -> torch.Tensor:
        """Training path of the full-resolution detail features [B,E,H,W]."""
        return self.shallow[1](upsample4_conv4(torch.cat([image, depth3], dim=1), self.shallow[0]))

    def _refined_half(self, mix: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        return self.refine_half(channels_last(resize(mix, half) + resize(shallow, half)))

    def _main_logits(self, x: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        unit = self.refine_full[0]
        return norm_act_head(unit, self.heads[0], unit[0](channels_last(resize(x, shallow.shape[-2:]) + shallow)))

    def forward(self, image: torch.Tensor, depth3: torch.Tensor, img_feats: Pyramid, depth_feats: Pyramid,
                patch_feats: Pyramid, release_inputs: bool = False) -> list[torch.Tensor]:
        """``release_inputs=True`` (inference) empties the pyramid lists as levels are consumed, so that their
        memory is free before the full-resolution stage; the caller must not need them afterwards."""
        h, w = image.shape[-2:]
        top = patch_feats[4]
        sides = {5: self.heads[5](resize_like(img_feats[4], top) + resize_like(depth_feats[4], top) + top)}
        img, depth, patch = img_feats[4], depth_feats[4], patch_feats[4]
        mix = None
        ckpt = self.grad_checkpointing
        for stage, level in enumerate((3, 2, 1, 0)):
            img, depth, patch, mix, sides[level + 1] = checkpointed(
                ckpt, self._fuse_level, stage, level, img, depth, patch, img_feats[level], depth_feats[level],
                patch_feats[level], sides[level + 2])
            if release_inputs:
                for pyramid in (img_feats, depth_feats, patch_feats):
                    pyramid[level] = pyramid[level + 1] = None
        del img, depth, patch

        # Full-resolution detail path: 4x upsample + 4x4/4 conv, fused without materialising the 4x input.
        lean = lean_inference(image)
        if not lean:
            shallow = checkpointed(ckpt, self._shallow_features, image, depth3)
            x = checkpointed(ckpt, self._refined_half, mix, shallow)
            main = checkpointed(ckpt, self._main_logits, x, shallow)
            return [main] + [sides[i] for i in range(1, 6)]
        release_freed_memory()
        shallow = upsample4_conv4(torch.cat([image, depth3], dim=1), self.shallow[0])
        release_freed_memory()
        shallow = conv_rows_inplace_(shallow, self.shallow[1], halo=1, strip_rows=64)
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        x = resize(mix, half).contiguous(memory_format=torch.channels_last)
        for start in range(0, half[0], 128):  # x += resize(shallow, half), a strip at a time
            stop = min(half[0], start + 128)
            x[:, :, start:stop] += resize_rows(shallow, half, start, stop)
        release_freed_memory()
        x = conv_rows_inplace_(x, self.refine_half, halo=1)
        main = self._full_res_head_in_strips(x, shallow)
        if main.shape[-2:] != (h, w):
            raise RuntimeError(f"decoder produced {tuple(main.shape[-2:])} for a {h}x{w} input")
        return [main] + [sides[i] for i in range(1, 6)]

    def _full_res_head_in_strips(self, half: torch.Tensor, shallow: torch.Tensor, strip_rows: int = 128,
                                 halo: int = 2) -> torch.Tensor:
        """``heads[0](refine_full(resize(half, HxW) + shallow))`` by strips of rows (two 3x3 convs: halo 2), so the
        full-resolution [B,E,H,W] sum and its refinement are never held whole. Inference only."""
        b, _, h, w = shallow.shape
        main = shallow.new_empty(b, 1, h, w)
        for start in range(0, h, strip_rows):
            stop = min(h, start + strip_rows)
            lo, hi = max(0, start - halo), min(h, stop + halo)
            x = resize_rows(half, (h, w), lo, hi).add_(shallow[:, :, lo:hi])
            main[:, :, start:stop] = conv3x3_to_few(self.refine_full(x), self.heads[0])[:, :, start - lo:stop - lo]
        return main


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
        self.grad_checkpointing = False  # recompute the full-resolution tail in backward

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
        full = checkpointed(self.grad_checkpointing, self._full_resolution, image, depth3, d1)
        return [full, self.heads[1](d1), self.heads[2](d2), self.heads[3](d3), self.heads[4](d4)]

    def _full_resolution(self, image: torch.Tensor, depth3: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        """The finest depth logits [B,1,H,W] from the L1 decoding d1 and the full-resolution shallow features."""
        shallow = self.shallow(channels_last(torch.cat([image, depth3], dim=1) if self.concat_streams else image))
        x = d1 + resize_like(shallow, d1)
        x = self.refine_half(channels_last(resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))))
        x = resize(x + resize_like(shallow, x), (2 * x.shape[-2], 2 * x.shape[-1]))
        return norm_act_head(self.refine_full, self.heads[0], self.refine_full[0](channels_last(x)))
