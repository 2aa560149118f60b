"""S-measure (structure measure), alpha = 0.5: object-aware + region-aware structural similarity.

Follows the reference implementation's conventions: centroid rounded half-to-even (numpy) plus one, as MATLAB's
1-based ranges; std with ddof=1; SSIM variances divided by N - 1 + eps. All sums come from raw-value histograms
(see prepare.py), per region and per GT class, so no per-pixel float arrays are built.
"""

from __future__ import annotations

import numpy as np

from .prepare import EPS, PreparedPair, masked_histogram

ALPHA = 0.5


def _object_score(counts: np.ndarray, values: np.ndarray) -> float:
    """2 m / (m^2 + 1 + std + eps) of the values taken ``counts`` times each (std with ddof=1)."""
    n = int(counts.sum())
    mean = float(counts @ values) / n
    std = float(np.sqrt((counts @ (values - mean) ** 2) / (n - 1))) if n > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _ssim(fg: np.ndarray, bg: np.ndarray, values: np.ndarray, region_pred) -> float:
    """SSIM between a region's prediction and GT, given the region's raw-value counts over GT fg and bg.

    ``region_pred()`` returns the region's float prediction (a view of the full map), needed only when constant."""
    n_fg, n = int(fg.sum()), int(fg.sum() + bg.sum())
    counts = fg + bg
    y = n_fg / n
    if np.count_nonzero(counts) == 1:
        # A constant region: the reference's pixel-wise mean of N equal floats may be off by an ulp (depending on
        # the memory layout of the region's view), which makes its variance tiny but non-zero and turns the 0/0 case
        # (score 1) into 0. Reproduce it on the same view of the same full-size float map.
        region = region_pred()
        x = float(np.mean(region))
        sigma_x = float(np.sum((region - x) ** 2)) / (n - 1 + EPS)
    else:
        x = float(counts @ values) / n
        sigma_x = float(counts @ ((values - x) * (values - x))) / (n - 1 + EPS)
    dx = values - x
    sigma_y = (n_fg * (1 - y) ** 2 + (n - n_fg) * y**2) / (n - 1 + EPS)
    sigma_xy = float(fg @ dx * (1 - y) + bg @ dx * (0 - y)) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def _region_counts(pair: PreparedPair, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = pair.pred_u8[rows, cols], pair.gt[rows, cols]
    if pred.size == 0:
        return np.zeros(256, np.int64), np.zeros(256, np.int64)
    fg = masked_histogram(pred, gt)
    return fg, masked_histogram(pred) - fg


def s_measure(pair: PreparedPair, alpha: float = ALPHA) -> float:
    gt, values = pair.gt, pair.values
    h, w = gt.shape
    n_fg = pair.n_fg
    if n_fg == 0:
        return float(1 - pair.mean_pred())
    if n_fg == gt.size:
        return pair.mean_pred()
    fg_ratio = n_fg / gt.size
    obj = (_object_score(pair.raw_fg, values) * fg_ratio
           + _object_score(pair.raw_bg, 1 - values) * (1 - fg_ratio))

    # Foreground centroid from exact integer sums (the reference averages the coordinates of np.argwhere).
    cy = float(np.round(int(gt.sum(axis=1) @ np.arange(h)) / n_fg))
    cx = float(np.round(int(gt.sum(axis=0) @ np.arange(w)) / n_fg))
    cy, cx = int(cy) + 1, int(cx) + 1
    area = h * w
    weights = (cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area)
    weights = weights + (1 - weights[0] - weights[1] - weights[2],)
    quadrants = ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
                 (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w)))
    region = 0.0
    for (rows, cols), weight in zip(quadrants, weights):
        fg, bg = _region_counts(pair, rows, cols)
        view = lambda rows=rows, cols=cols: pair.pred[rows, cols]  # noqa: E731 - built only for constant regions
        score = _ssim(fg, bg, values, view) if fg.sum() + bg.sum() else float("nan")  # empty quadrant: NaN, as numpy
        region += score * weight
    return float(max(0.0, obj * alpha + region * (1 - alpha)))
