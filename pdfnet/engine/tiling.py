"""Tiled inference for images far above the model size.

A global pass sees the whole image at the model size; overlapping tiles of the model size see the image at full
resolution. Tile probabilities are blended with separable raised-cosine weights that fall off only over the overlap
with a neighbouring tile, so there are no seams and the image border keeps full weight. A tile over which the global
pass is confidently uniform (every probability below ``1 - c`` or above ``c``) is not run: the global prediction is
used there (blended in the same way).

Memory: the model only ever sees ``batch_size`` tiles of S x S; beyond the image and its depth map, the only
image-sized array is the float32 output, which doubles as the blending accumulator (the weight sum is separable, so it
is two 1-D arrays).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .inference import predict_model_size, predict_probs, probs_at_size


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering [0, length) with at least ``overlap`` pixels shared by
    neighbours, spread evenly; one tile (start 0, spanning the whole axis) when ``length <= tile``."""
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, {tile}) pixels, got {overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_window(start: int, span: int, length: int, overlap: int) -> np.ndarray:
    """1-D blending weight [span] of a tile at [start, start + span) of an axis of ``length`` pixels: 1 inside,
    a raised-cosine ramp over ``overlap`` pixels at each edge that borders another tile (never at the image
    border). Strictly positive everywhere, so every pixel has weight."""
    weight = np.ones(span, np.float64)
    if overlap == 0:
        return weight
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
    n = min(overlap, span)
    if start > 0:
        weight[:n] = np.minimum(weight[:n], ramp[:n])
    if start + span < length:
        weight[span - n:] = np.minimum(weight[span - n:], ramp[:n][::-1])
    return weight


def interpolation_rows(n_in: int, n_out: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows [start, stop) of the [n_out, n_in] matrix of a 1-D bilinear resize n_in -> n_out without corner
    alignment (F.interpolate's ``align_corners=False`` mapping, edges clamped)."""
    out = torch.arange(start, stop, device=device, dtype=torch.float64)
    src = ((out + 0.5) * (n_in / n_out) - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    frac = (src - i0).float()
    matrix = torch.zeros(stop - start, n_in, device=device)
    rows = torch.arange(stop - start, device=device)
    matrix.index_put_((rows, i0), 1 - frac, accumulate=True)
    matrix.index_put_((rows, i1), frac, accumulate=True)
    return matrix


def _is_uniform(global_probs: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor, confidence: float) -> bool:
    """Whether every global probability that the region's resize ``ry @ global_probs @ rx.T`` reads is below 1 - c
    or every one above c (a bilinear resize is a convex combination, so the region is then uniform too)."""
    if confidence >= 1.0:
        return False
    used_rows = ry.abs().sum(0).nonzero()[:, 0]
    used_cols = rx.abs().sum(0).nonzero()[:, 0]
    block = global_probs[used_rows.min():used_rows.max() + 1, used_cols.min():used_cols.max() + 1]
    return bool(block.max() < 1 - confidence or block.min() > confidence)


@torch.no_grad()
def predict_probs_tiled(model: torch.nn.Module, image_rgb: np.ndarray, depth: np.ndarray, size: int = 1024,
                        tta: bool = False, half: bool = False, overlap: int = 256, batch_size: int = 1,
                        skip_confidence: float = 0.98,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Foreground probabilities float32 [H,W] for one image, from a global pass and full-resolution S x S tiles.

    Tiles overlap by at least ``overlap`` pixels and run ``batch_size`` at a time. ``skip_confidence`` c: tiles where
    the global pass is confidently uniform are not run (c >= 1: every tile runs). An image no larger than one tile
    (H <= S and W <= S) takes the plain path, so its result equals :func:`predict_probs`.

    The model normalises each tile's depth crop to [0, 1] on its own, as it does for any input. ``progress(done,
    total)`` is called after the global pass and after each batch of tiles (skipped tiles count as done).
    """
    height, width = image_rgb.shape[:2]
    if height <= size and width <= size:
        return predict_probs(model, image_rgb, depth, size, tta, half)
    global_probs = predict_model_size(model, [image_rgb], [depth], size, tta, half)[0, 0]
    ys, xs = tile_starts(height, size, overlap), tile_starts(width, size, overlap)
    done, total = 0, len(ys) * len(xs)
    if progress is not None:
        progress(done, total)
    span_y, span_x = min(size, height), min(size, width)
    out = np.zeros((height, width), np.float32)  # weighted sum of tile probabilities, then the result
    # Per tile row / column: its 1-D blending window and the rows / columns of the global map's resize it covers.
    window_y = {y: tile_window(y, span_y, height, overlap) for y in ys}
    window_x = {x: tile_window(x, span_x, width, overlap) for x in xs}
    resize_y = {y: interpolation_rows(global_probs.shape[0], height, y, y + span_y, global_probs.device) for y in ys}
    resize_x = {x: interpolation_rows(global_probs.shape[1], width, x, x + span_x, global_probs.device) for x in xs}
    weight_y, weight_x = np.zeros(height), np.zeros(width)
    for y in ys:
        weight_y[y:y + span_y] += window_y[y]
    for x in xs:
        weight_x[x:x + span_x] += window_x[x]

    def accumulate(y: int, x: int, probs: np.ndarray) -> None:
        out[y:y + span_y, x:x + span_x] += (probs * np.outer(window_y[y], window_x[x])).astype(np.float32)

    pending: list[tuple[int, int]] = []

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def run_pending() -> None:
        crops = [(image_rgb[y:y + span_y, x:x + span_x], depth[y:y + span_y, x:x + span_x]) for y, x in pending]
        probs = predict_model_size(model, [c[0] for c in crops], [c[1] for c in crops], size, tta, half)
        for (y, x), p in zip(pending, probs):
            accumulate(y, x, probs_at_size(p, span_y, span_x))
        advance(len(pending))
        pending.clear()

    for y in ys:
        for x in xs:
            if _is_uniform(global_probs, resize_y[y], resize_x[x], skip_confidence):
                region = resize_y[y] @ global_probs @ resize_x[x].T
                accumulate(y, x, region.clamp_(0, 1).cpu().numpy())
                advance(1)
                continue
            pending.append((y, x))
            if len(pending) == batch_size:
                run_pending()
    if pending:
        run_pending()
    np.divide(out, weight_y[:, None].astype(np.float32), out=out)
    np.divide(out, weight_x[None, :].astype(np.float32), out=out)
    return np.clip(out, 0, 1, out=out)


def count_tiles(height: int, width: int, size: int, overlap: int) -> int:
    """Number of tiles :func:`predict_probs_tiled` uses for an image (1 when it takes the plain path)."""
    if height <= size and width <= size:
        return 1
    return len(tile_starts(height, size, overlap)) * len(tile_starts(width, size, overlap))

