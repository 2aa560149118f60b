"""Segmentation decoder (4 FSE stages, 6 logit maps) and the auxiliary depth decoder of PDFNet."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    ConvNormAct,
    channels_last,
    checkpointed,
    conv_layout,
    lean_inference,
    norm_act_head,
    plain_conv_layout,
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


def source_rows(n_in: int, n_out: int, row_start: int, row_stop: int) -> tuple[int, int]:
    """The source rows [lo, hi) that output rows [row_start, row_stop) of a bilinear ``align_corners=True`` resize of
    n_in rows to n_out rows read."""
    i0, i1, _ = _align_corners_taps(n_in, n_out, torch.device("cpu"))
    return int(i0[row_start]), int(i1[row_stop - 1]) + 1


def resize_rows(x: torch.Tensor, size: tuple[int, int], row_start: int, row_stop: int, source_start: int = 0,
                source_height: int | None = None) -> torch.Tensor:
    """Rows [row_start, row_stop) of ``resize(x, size)`` (bilinear, align_corners=True) without the full resize.

    x: [B,C,h,w] -> [B,C,row_stop-row_start,size[1]], in x's memory format. x may also be a band of rows: rows
    [source_start, source_start + h) of a map with ``source_height`` rows (it must contain :func:`source_rows`).
    Rows are blended here from their two source rows; columns go through F.interpolate (with the row count
    unchanged, its row mapping is the identity). Equal to the full resize up to float rounding.
    """
    n_in = x.shape[-2] if source_height is None else source_height
    if source_height is not None:
        lo, hi = source_rows(n_in, size[0], row_start, row_stop)
        if lo < source_start or hi > source_start + x.shape[-2]:
            raise ValueError(f"rows [{row_start}, {row_stop}) of the resize read source rows [{lo}, {hi}), outside "
                             f"the band [{source_start}, {source_start + x.shape[-2]})")
    i0, i1, frac = (t[row_start:row_stop] for t in _align_corners_taps(n_in, size[0], x.device))
    i0, i1 = i0 - source_start, i1 - source_start
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        nhwc = x.permute(0, 2, 3, 1)  # gather whole rows of the channels-last memory
        rows = torch.lerp(nhwc.index_select(1, i0), nhwc.index_select(1, i1), frac.to(x.dtype).view(1, -1, 1, 1))
        rows = rows.permute(0, 3, 1, 2)
    else:
        rows = torch.lerp(x.index_select(2, i0), x.index_select(2, i1), frac.to(x.dtype).view(1, 1, -1, 1))
    return F.interpolate(rows, size=(rows.shape[2], size[1]), mode="bilinear", align_corners=True)


class RowStream:
    """The rows of a [B,C,H,W] map, computed on demand top to bottom and dropped once no consumer needs them.

    ``compute(a, b)`` returns rows [a, b) (reading whatever other streams it needs); it is called for at least
    ``band_rows`` new rows at a time. Consumers read row windows with :meth:`rows` and promise with
    :meth:`drop_below` not to read rows above a given one again. A chain of local ops (convs, resizes) over
    full-resolution maps then holds only a band of rows of each map (CPU inference).
    """

    def __init__(self, height: int, compute: Callable[[int, int], torch.Tensor], band_rows: int) -> None:
        self.height, self.compute, self.band_rows = height, compute, band_rows
        self.start = self.stop = 0  # rows [start, stop) are held in self.band
        self.band: torch.Tensor | None = None

    def rows(self, a: int, b: int) -> torch.Tensor:
        """Rows [a, b) (clipped to the map) -> [B,C,b-a,W], a view into the band."""
        a, b = max(0, a), min(self.height, b)
        if a < self.start:
            raise RuntimeError(f"row {a} was requested after rows below {self.start} were dropped")
        if b > self.stop:
            stop = min(self.height, max(b, self.stop + self.band_rows))
            fresh = self.compute(self.stop, stop)
            self.band = fresh if self.band is None or self.start == self.stop else torch.cat([self.band, fresh], 2)
            self.stop = stop
        return self.band[:, :, a - self.start:b - self.start]

    def drop_below(self, row: int) -> None:
        """Free rows < ``row``: no consumer will read them again."""
        row = min(max(row, self.start), self.stop)
        if row > self.start and self.band is not None:
            self.band = self.band[:, :, row - self.start:].clone()  # a copy, so the dropped rows' memory is freed
            self.start = row


def local_rows(source: RowStream, op: Callable[[torch.Tensor], torch.Tensor],
               halo: int) -> Callable[[int, int], torch.Tensor]:
    """``compute`` of a :class:`RowStream` for ``op(source map)``, a shape-preserving op reading ``halo`` rows on
    each side (1 for a 3x3 conv): rows [a, b) are ``op`` of the source rows [a - halo, b + halo) (the image border
    is the op's own zero padding). The result's only consumer of ``source``: drops the rows it no longer needs."""

    def compute(a: int, b: int) -> torch.Tensor:
        lo = max(0, a - halo)
        out = op(source.rows(lo, b + halo))[:, :, a - lo:b - lo]
        source.drop_below(b - halo)
        return out

    return compute


def upsample4_conv4(x: torch.Tensor, conv: nn.Conv2d, strip_rows: int = 64) -> torch.Tensor:
    """``conv(resize(x, 4x))`` for a 4x4/stride-4 conv, computed in strips of output rows.

    x: [B,Cin,H,W] -> [B,Cout,H,W]. Output rows [i, j) of the strided conv only see upsampled rows [4i, 4j), so each
    strip upsamples just those rows and runs the same conv: the official arithmetic without materialising the whole
    [B,Cin,4H,4W] input (400 MB at 1024²). The result is in :func:`conv_layout` (the full-resolution convs that
    follow read it).
    """
    if torch.is_grad_enabled() and not torch.compiler.is_compiling() and conv.stride == (4, 4) \
            and conv.kernel_size == (4, 4) and conv.padding == (0, 0):
        return _Upsample4Conv4.apply(x, conv.weight, conv.bias, strip_rows, plain_conv_layout(x))
    return conv_layout(torch.cat([conv(channels_last(strip)) for _, _, strip in _upsampled_strips(x, strip_rows)],
                                 dim=2))


def _upsampled_rows(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [4 * start, 4 * stop) of x [B,C,H,W] upsampled 4x: the input rows a 4x4/stride-4 conv needs for its
    output rows [start, stop)."""
    h, w = x.shape[-2:]
    return resize_rows(x, (4 * h, 4 * w), 4 * start, 4 * stop)


def _upsampled_strips(x: torch.Tensor, strip_rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(i, j, rows [4i, 4j) of the 4x upsampled x) for the row strips [i, j) of ``strip_rows`` rows of x, one at a
    time."""
    h = x.shape[-2]
    for start in range(0, h, strip_rows):
        stop = min(h, start + strip_rows)
        yield start, stop, _upsampled_rows(x, start, stop)


class _Upsample4Conv4(torch.autograd.Function):
    """Training form of :func:`upsample4_conv4`: keeps only x for backward, not the upsampled strips the conv read
    ([B,Cin,4H,4W] in all: 400 MB at 1024² in float32); backward upsamples each strip again (cheap) for the weight
    gradient. The input gradient (the image's, not normally wanted) is computed through autograd on each strip."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, strip_rows: int,
                plain_layout: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.strip_rows, ctx.has_bias = strip_rows, bias is not None
        ctx.layout = torch.Tensor.contiguous if plain_layout else channels_last
        with torch.no_grad():  # autocast, when active, picks the conv's dtype as for the module
            out = torch.cat([F.conv2d(ctx.layout(strip), weight, bias, stride=4)
                             for _, _, strip in _upsampled_strips(x, strip_rows)], dim=2)
        ctx.dtype = out.dtype
        return ctx.layout(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        grad_x = torch.zeros_like(x) if want_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        for start, stop, strip in _upsampled_strips(x, ctx.strip_rows):
            g = grad[:, :, start:stop].to(ctx.dtype)
            if want_w:
                grad_w += torch.nn.grad.conv2d_weight(ctx.layout(strip.to(ctx.dtype)), weight.shape, g,
                                                      stride=4).float()
            if want_x:
                with torch.enable_grad():
                    x_ = x.detach().requires_grad_()
                    piece = _upsampled_rows(x_, start, stop)
                    (gx,) = torch.autograd.grad(F.conv2d(piece.to(ctx.dtype), weight.to(ctx.dtype), stride=4), x_, g)
                grad_x += gx
        grad_b = grad.float().sum(dim=(0, 2, 3)).to(weight.dtype) if want_b and ctx.has_bias else None
        return grad_x, grad_w.to(weight.dtype) if want_w else None, grad_b, None, None


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
        return self.refine_half(conv_layout(resize(mix, half) + resize(shallow, half)))

    def _main_logits(self, x: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        unit = self.refine_full[0]
        return norm_act_head(unit, self.heads[0], unit[0](conv_layout(resize(x, shallow.shape[-2:]) + shallow)))

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
        main = self._full_resolution_in_bands(image, depth3, mix)
        if main.shape[-2:] != (h, w):
            raise RuntimeError(f"decoder produced {tuple(main.shape[-2:])} for a {h}x{w} input")
        return [main] + [sides[i] for i in range(1, 6)]

    def _full_resolution_in_bands(self, image: torch.Tensor, depth3: torch.Tensor, mix: torch.Tensor,
                                  band_rows: int = 64, head_rows: int = 128) -> torch.Tensor:
        """CPU inference form of the full-resolution path (the training path's arithmetic): main logits [B,1,H,W].

        The stages run as a pipeline over bands of rows (:class:`RowStream`): shallow features (4x upsample + 4x4/4
        conv, then a 3x3 unit), their half-resolution sum with the L1 mix and its 3x3 refinement, then the
        full-resolution 3x3 unit and logit head. Each stage holds only the rows its consumers still need, so no
        [B,E,H,W] map (512 MiB at 1024², E=128) is ever held whole.
        """
        b, _, h, w = image.shape
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        raw = torch.cat([image, depth3], dim=1)
        mix = channels_last(mix)
        conv4 = self.shallow[0]
        shallow_in = RowStream(h, lambda lo, hi: conv4(channels_last(_upsampled_rows(raw, lo, hi))), band_rows)
        shallow = RowStream(h, local_rows(shallow_in, self.shallow[1], halo=1), band_rows)

        def half_sum(lo: int, hi: int) -> torch.Tensor:  # resize(mix, half) + resize(shallow, half), rows [lo, hi)
            first, last = source_rows(h, half[0], lo, hi)
            return resize_rows(mix, half, lo, hi).add_(
                resize_rows(shallow.rows(first, last), half, lo, hi, source_start=first, source_height=h))

        refined_half = RowStream(half[0], local_rows(RowStream(half[0], half_sum, band_rows), self.refine_half, halo=1),
                                 band_rows)
        main = raw.new_empty(b, 1, h, w)
        halo = 2  # refine_full and the head are two 3x3 convs
        for start in range(0, h, head_rows):
            stop = min(h, start + head_rows)
            lo, hi = max(0, start - halo), min(h, stop + halo)
            first, last = source_rows(half[0], h, lo, hi)
            x = resize_rows(refined_half.rows(first, last), (h, w), lo, hi, source_start=first,
                            source_height=half[0])
            x.add_(shallow.rows(lo, hi))
            main[:, :, start:stop] = conv3x3_to_few(self.refine_full(x), self.heads[0])[:, :, start - lo:stop - lo]
            shallow.drop_below(stop - halo)
            if stop < h:
                refined_half.drop_below(source_rows(half[0], h, stop - halo, stop - halo + 1)[0])
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
        shallow = self.shallow(conv_layout(torch.cat([image, depth3], dim=1) if self.concat_streams else image))
        x = d1 + resize_like(shallow, d1)
        x = self.refine_half(conv_layout(resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))))
        x = resize(x + resize_like(shallow, x), (2 * x.shape[-2], 2 * x.shape[-1]))
        return norm_act_head(self.refine_full, self.heads[0], self.refine_full[0](conv_layout(x)))
