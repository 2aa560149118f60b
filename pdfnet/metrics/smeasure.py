"""S-measure (structure measure), alpha = 0.5: object-aware + region-aware structural similarity.

Follows the reference implementation's conventions: centroid rounded half-to-even (numpy) plus one, as MATLAB's
1-based ranges; std with ddof=1; SSIM variances divided by N - 1 + eps.
"""

from __future__ import annotations

import numpy as np

from .prepare import EPS, PreparedPair

ALPHA = 0.5


def _object_score(values: np.ndarray) -> float:
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    x, y = float(np.mean(pred)), float(np.mean(gt))
    dx, dy = pred - x, gt - y
    sigma_x = float(np.sum(dx * dx)) / (n - 1 + EPS)
    sigma_y = float(np.sum(dy * dy)) / (n - 1 + EPS)
    sigma_xy = float(np.sum(dx * dy)) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_measure(pair: PreparedPair, alpha: float = ALPHA) -> float:
    pred, gt = pair.pred, pair.gt
    h, w = gt.shape
    n_fg = pair.n_fg
    if n_fg == 0:
        return float(1 - np.mean(pred))
    if n_fg == gt.size:
        return float(np.mean(pred))
    fg_ratio = n_fg / gt.size
    obj = _object_score(pred[gt]) * fg_ratio + _object_score(1 - pred[~gt]) * (1 - fg_ratio)

    # Centroid of the foreground from row/column counts (exact integer sums, then the same float mean).
    rows, cols = np.nonzero(gt)
    cy, cx = np.round(rows.mean()), np.round(cols.mean())
    cy, cx = int(cy) + 1, int(cx) + 1
    area = h * w
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    gt_f = gt.astype(np.float64)
    region = (_ssim(pred[:cy, :cx], gt_f[:cy, :cx]) * w_lt + _ssim(pred[:cy, cx:], gt_f[:cy, cx:]) * w_rt
              + _ssim(pred[cy:, :cx], gt_f[cy:, :cx]) * w_lb + _ssim(pred[cy:, cx:], gt_f[cy:, cx:]) * w_rb)
    return float(max(0.0, obj * alpha + region * (1 - alpha)))
