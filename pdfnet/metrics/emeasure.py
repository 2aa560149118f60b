"""E-measure (enhanced alignment): curve over 256 thresholds and adaptive value, from the pair's histograms.

For a binary prediction the enhanced-alignment matrix takes one of four values (pred fg/bg x GT fg/bg), so its sum
is a weighted count. Divided by N - 1 as the reference implementation: values slightly above 1 are legitimate.
"""

from __future__ import annotations

import numpy as np

from .prepare import EPS, PreparedPair, adaptive_threshold, counts_at_or_above


def _enhanced_sum(pred_fg_gt_fg, pred_fg_gt_bg, n_fg: int, size: int):
    """Sum of the enhanced alignment matrix given the counts of predicted foreground on GT fg / GT bg.

    Works on scalars or arrays of counts (one per threshold).
    """
    pred_fg = pred_fg_gt_fg + pred_fg_gt_bg
    pred_bg = size - pred_fg
    if n_fg == 0:
        return pred_bg
    if n_fg == size:
        return pred_fg
    pred_bg_gt_fg = n_fg - pred_fg_gt_fg
    pred_bg_gt_bg = pred_bg - pred_bg_gt_fg
    mean_pred, mean_gt = pred_fg / size, n_fg / size
    total = 0
    for count, p, g in ((pred_fg_gt_fg, 1 - mean_pred, 1 - mean_gt), (pred_fg_gt_bg, 1 - mean_pred, -mean_gt),
                        (pred_bg_gt_fg, -mean_pred, 1 - mean_gt), (pred_bg_gt_bg, -mean_pred, -mean_gt)):
        align = 2 * (p * g) / (p**2 + g**2 + EPS)
        total = total + (align + 1) ** 2 / 4 * count
    return total


def e_curve(pair: PreparedPair) -> np.ndarray:
    """E-measure [256], index i = threshold ``q >= 255 - i``."""
    fg_fg = np.cumsum(pair.hist_fg[::-1])
    fg_bg = np.cumsum(pair.hist_bg[::-1])
    return _enhanced_sum(fg_fg, fg_bg, pair.n_fg, pair.size) / (pair.size - 1 + EPS)


def adaptive_e(pair: PreparedPair) -> float:
    fg_fg, fg_bg = counts_at_or_above(pair, adaptive_threshold(pair))
    return float(_enhanced_sum(fg_fg, fg_bg, pair.n_fg, pair.size) / (pair.size - 1 + EPS))
