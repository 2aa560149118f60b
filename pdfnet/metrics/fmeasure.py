"""F-measure family: precision/recall/F curves over 256 thresholds, adaptive F, and MAE.

F_beta = (1 + b2) P R / (b2 P + R), with b2 = 0.3 (the SOD/DIS convention, PySODMetrics' ``beta``).
"""

from __future__ import annotations

import numpy as np

from .prepare import PreparedPair, adaptive_threshold, counts_at_or_above

BETA2 = 0.3


def _cumulative_from_top(hist: np.ndarray) -> np.ndarray:
    """counts of ``q >= 255 - i`` for i = 0..255."""
    return np.cumsum(hist[::-1])


def pr_curves(pair: PreparedPair) -> tuple[np.ndarray, np.ndarray]:
    """(precision [256], recall [256]); index i is threshold ``q >= 255 - i``. Zero predicted positives give P = 0."""
    tp = _cumulative_from_top(pair.hist_fg)
    predicted = tp + _cumulative_from_top(pair.hist_bg)
    predicted[predicted == 0] = 1  # numerator is 0 there too
    return tp / predicted, tp / max(pair.n_fg, 1)


def f_from_pr(precision: np.ndarray, recall: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    numerator = (1 + beta2) * precision * recall
    return numerator / np.where(numerator == 0, 1, beta2 * precision + recall)


def adaptive_f(pair: PreparedPair, beta2: float = BETA2) -> float:
    """F at the adaptive threshold ``min(2 mean, 1)`` (``pred >= t``); 0 when nothing true is predicted."""
    hit, false = counts_at_or_above(pair, adaptive_threshold(pair))
    if hit == 0:
        return 0.0
    precision, recall = hit / (hit + false), hit / pair.n_fg
    return (1 + beta2) * precision * recall / (beta2 * precision + recall)


def mae(pair: PreparedPair) -> float:
    """Mean absolute error between the stretched prediction and the binary GT."""
    return float(pair.raw_fg @ (1 - pair.values) + pair.raw_bg @ pair.values) / pair.size
