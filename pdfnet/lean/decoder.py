"""CPU forms of the decoders' full-resolution paths and of the model's stages.

* Training: the shallow branch's 4x upsample + 4x4/stride-4 conv in strips of rows with its own backward (keeps only
  the input, not the [B,C,4H,4W] upsampled map), the logit heads recomputing their input in backward, and the
  full-resolution convs in the layout that trains fastest on this CPU (:class:`~pdfnet.lean.cpu.ConvLayout`).
* Inference: the full-resolution path as a pipeline over bands of rows (:class:`RowStream`), so that no [B,E,H,W]
  map (512 MiB at 1024², E=128) is ever held whole; freed heap returned to the OS between stages.

Each form computes the reference arithmetic (pdfnet/models/decoder.py); under torch.compile the reference forms run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models.decoder import DepthDecoder, SegmentationDecoder
from ..models.pdfnet import PDFNet
from ..ops import checkpointed, normalize_depth, resize, resize_like
from .cpu import ConvLayout, channels_last, release_freed_memory


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


def upsample4_conv4(x: torch.Tensor, conv: nn.Conv2d, layout: ConvLayout, strip_rows: int = 64) -> torch.Tensor:
    """``conv(resize(x, 4x))`` for a 4x4/stride-4 conv, computed in strips of output rows.

    x: [B,Cin,H,W] -> [B,Cout,H,W]. Output rows [i, j) of the strided conv only see upsampled rows [4i, 4j), so each
    strip upsamples just those rows and runs the same conv: the official arithmetic without materialising the whole
    [B,Cin,4H,4W] input (400 MB at 1024²). The result is in ``layout`` (the full-resolution convs that follow read
    it).
    """
    if conv.stride != (4, 4) or conv.kernel_size != (4, 4) or conv.padding != (0, 0):
        raise ValueError("upsample4_conv4 needs a 4x4 conv with stride 4 and no padding")
    if torch.is_grad_enabled():
        return _Upsample4Conv4.apply(x, conv.weight, conv.bias, strip_rows, layout.plain())
    return layout(torch.cat([conv(channels_last(strip)) for _, _, strip in _upsampled_strips(x, strip_rows)], dim=2))


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


def norm_act_head(unit: nn.Module, head: nn.Module, y: torch.Tensor, layout: ConvLayout) -> torch.Tensor:
    """``head(unit.norm_act(y))``: a logit head on a conv-norm-act unit whose conv output is ``y``. In training the
    activation the head reads is recomputed in backward from ``y`` (which the norm keeps anyway) instead of being
    kept: one full-resolution [B,E,H,W] map less per head (512 MiB at 1024² in float32)."""
    def run(t: torch.Tensor) -> torch.Tensor:
        return head(layout(unit.norm_act(t)))

    return checkpointed(True, run, y)


def _inference() -> bool:
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


class LeanSegmentationDecoder(SegmentationDecoder):
    """:class:`~pdfnet.models.decoder.SegmentationDecoder` with the CPU forms of its full-resolution path."""

    layout: ConvLayout

    def full_resolution(self, image: torch.Tensor, depth3: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return super().full_resolution(image, depth3, mix)
        if _inference():
            release_freed_memory()
            return self.full_resolution_in_bands(image, depth3, mix)
        layout = self.layout
        shallow = self.shallow[1](upsample4_conv4(torch.cat([image, depth3], dim=1), self.shallow[0], layout))
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        x = self.refine_half(layout(resize(mix, half) + resize(shallow, half)))
        unit = self.refine_full[0]
        return norm_act_head(unit, self.heads[0], unit[0](layout(resize_like(x, shallow) + shallow)), layout)

    def full_resolution_in_bands(self, image: torch.Tensor, depth3: torch.Tensor, mix: torch.Tensor,
                                 band_rows: int = 64, head_rows: int = 128) -> torch.Tensor:
        """Inference form of :meth:`full_resolution` (the same arithmetic): main logits [B,1,H,W].

        The stages run as a pipeline over bands of rows (:class:`RowStream`): shallow features (4x upsample + 4x4/4
        conv, then a 3x3 unit), their half-resolution sum with the L1 mix and its 3x3 refinement, then the
        full-resolution 3x3 unit and logit head. Each stage holds only the rows its consumers still need.
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


class LeanDepthDecoder(DepthDecoder):
    """:class:`~pdfnet.models.decoder.DepthDecoder` with the CPU layout and recomputing logit head of its
    full-resolution tail in training."""

    layout: ConvLayout

    def full_resolution(self, image: torch.Tensor, depth3: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or not torch.is_grad_enabled():
            return super().full_resolution(image, depth3, d1)
        layout = self.layout
        shallow = self.shallow(layout(torch.cat([image, depth3], dim=1) if self.concat_streams else image))
        x = d1 + resize_like(shallow, d1)
        x = self.refine_half(layout(resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))))
        x = resize(x + resize_like(shallow, x), (2 * x.shape[-2], 2 * x.shape[-1]))
        return norm_act_head(self.refine_full, self.heads[0], self.refine_full[0](layout(x)), layout)


class LeanPDFNet(PDFNet):
    """:class:`~pdfnet.models.pdfnet.PDFNet` whose inference frees each stage's inputs before the next stage and
    returns the freed heap to the OS between stages (peak RSS close to what is live)."""

    def forward(self, image: torch.Tensor, depth: torch.Tensor, return_depth: bool = False):
        if return_depth or not _inference():
            return super().forward(image, depth, return_depth)
        self.check_input(image, depth)
        depth3 = normalize_depth(depth).expand(-1, 3, -1, -1)
        if not self.use_depth:
            depth3 = torch.zeros_like(depth3)
        pyramids = self.encode_all(image, depth3)
        release_freed_memory()
        sides, mix = self.decoder.decode_levels(*pyramids)
        del pyramids
        release_freed_memory()
        main = self.decoder.full_resolution(image, depth3, mix)
        if main.shape[-2:] != image.shape[-2:]:
            raise RuntimeError(f"decoder produced {tuple(main.shape[-2:])} for a {tuple(image.shape[-2:])} input")
        return [main] + sides
