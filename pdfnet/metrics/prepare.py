"""Turning a (prediction, ground truth) pair into what every DIS metric reads, once per pair.

Conventions (PySODMetrics / BiRefNet evaluator): both maps uint8 grayscale; a prediction of another size is resized to
the GT with ``cv2.resize(pred, (W, H), interpolation=cv2.INTER_LINEAR)``; GT foreground is ``gt > 128``; the
prediction is divided by 255 and min-max stretched unless constant; curves use 256 thresholds on the uint8-truncated
stretched map (index i <=> ``q >= 255 - i``).

A uint8 prediction takes at most 256 values, so the stretched value, its quantised level and every per-pixel sum the
metrics need are functions of the raw value: they are computed once per value (``values``, ``levels``) and weighted
by the raw histograms over GT foreground and background, instead of pixel by pixel.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# numpy's spacing(1), MATLAB's eps: the epsilon every reference formula uses.
EPS = float(np.spacing(1))


@dataclasses.dataclass
class PreparedPair:
    """pred_u8/gt_u8: uint8 [H,W] (pred resized to the GT); gt: bool [H,W]; values: float64 [256], the stretched
    prediction value of each raw value; raw_fg/raw_bg: int64 [256] raw-value counts over GT foreground/background;
    hist_fg/hist_bg: int64 [256] counts of the quantised levels."""

    pred_u8: np.ndarray
    gt_u8: np.ndarray
    gt: np.ndarray
    values: np.ndarray
    raw_fg: np.ndarray
    raw_bg: np.ndarray
    hist_fg: np.ndarray
    hist_bg: np.ndarray
    _pred: np.ndarray | None = None

    @property
    def pred(self) -> np.ndarray:
        """Stretched prediction, float64 [H,W] in [0,1] (built on first use)."""
        if self._pred is None:
            self._pred = self.values[self.pred_u8]
        return self._pred

    @property
    def n_fg(self) -> int:
        return int(self.raw_fg.sum())

    @property
    def size(self) -> int:
        return self.gt.size

    def mean_pred(self) -> float:
        return float((self.raw_fg + self.raw_bg) @ self.values) / self.size


def match_size(pred_u8: np.ndarray, gt_shape: tuple[int, int]) -> np.ndarray:
    """Resize a prediction to the GT's [H,W] (bilinear, OpenCV), if it differs."""
    if pred_u8.shape == gt_shape:
        return pred_u8
    return cv2.resize(pred_u8, (gt_shape[1], gt_shape[0]), interpolation=cv2.INTER_LINEAR)


def stretched_values(lo: int, hi: int) -> np.ndarray:
    """float64 [256]: ``v / 255`` min-max stretched with the map's range [lo, hi], as the reference computes it."""
    values = np.arange(256) / 255.0
    if hi != lo:
        values = (values - lo / 255.0) / (hi / 255.0 - lo / 255.0)
    return values


def masked_histogram(image_u8: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """int64 [256] histogram of a uint8 map, optionally over ``mask`` (bool or uint8) only."""
    if image_u8.size == 0:
        return np.zeros(256, dtype=np.int64)
    m = None if mask is None else mask.view(np.uint8) if mask.dtype == bool else mask
    hist = cv2.calcHist([np.ascontiguousarray(image_u8)], [0],
                        None if m is None else np.ascontiguousarray(m), [256], [0, 256])
    return hist.ravel().astype(np.int64)


def prepare_pair(pred_u8: np.ndarray, gt_u8: np.ndarray) -> PreparedPair:
    """pred_u8, gt_u8: uint8 [H,W] (prediction of any size) -> :class:`PreparedPair`."""
    if pred_u8.dtype != np.uint8 or gt_u8.dtype != np.uint8 or pred_u8.ndim != 2 or gt_u8.ndim != 2:
        raise ValueError(f"expected uint8 [H,W] maps, got pred {pred_u8.dtype} {pred_u8.shape} and gt "
                         f"{gt_u8.dtype} {gt_u8.shape}")
    pred_u8 = match_size(pred_u8, gt_u8.shape)
    gt = gt_u8 > 128
    raw_all = masked_histogram(pred_u8)
    raw_fg = masked_histogram(pred_u8, gt)
    raw_bg = raw_all - raw_fg
    present = np.flatnonzero(raw_all)
    values = stretched_values(int(present[0]), int(present[-1]))
    levels = (values * 255).astype(np.uint8)  # the uint8-truncated stretched map, per raw value
    hist_fg = np.bincount(levels, weights=raw_fg, minlength=256).astype(np.int64)
    hist_bg = np.bincount(levels, weights=raw_bg, minlength=256).astype(np.int64)
    return PreparedPair(pred_u8=pred_u8, gt_u8=gt_u8, gt=gt, values=values, raw_fg=raw_fg, raw_bg=raw_bg,
                        hist_fg=hist_fg, hist_bg=hist_bg)


def adaptive_threshold(pair: PreparedPair) -> float:
    """``min(2 * mean(pred), 1)``."""
    return min(2.0 * pair.mean_pred(), 1.0)


def counts_at_or_above(pair: PreparedPair, threshold: float) -> tuple[int, int]:
    """(# GT-foreground pixels, # GT-background pixels) with stretched prediction ``>= threshold``."""
    above = pair.values >= threshold
    return int(pair.raw_fg[above].sum()), int(pair.raw_bg[above].sum())
