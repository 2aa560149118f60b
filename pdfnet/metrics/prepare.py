"""Turning a (prediction, ground truth) pair into what every DIS metric reads, once per pair.

Conventions (PySODMetrics / BiRefNet evaluator): both maps uint8 grayscale; a prediction of another size is resized to
the GT with ``cv2.resize(pred, (W, H), interpolation=cv2.INTER_LINEAR)``; GT foreground is ``gt > 128``; the
prediction is divided by 255 and min-max stretched unless constant; curves use 256 thresholds on the uint8-truncated
stretched map (index i <=> ``q >= 255 - i``).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# numpy's spacing(1), MATLAB's eps: the epsilon every reference formula uses.
EPS = float(np.spacing(1))


@dataclasses.dataclass
class PreparedPair:
    """pred: float64 [H,W] in [0,1] (stretched); gt: bool [H,W]; pred_u8/gt_u8: the raw uint8 maps (HCE reads these);
    hist_fg/hist_bg: int64 [256] counts of the quantised map over GT foreground/background."""

    pred: np.ndarray
    gt: np.ndarray
    pred_u8: np.ndarray
    gt_u8: np.ndarray
    hist_fg: np.ndarray
    hist_bg: np.ndarray

    @property
    def n_fg(self) -> int:
        return int(self.hist_fg.sum())

    @property
    def size(self) -> int:
        return self.gt.size


def match_size(pred_u8: np.ndarray, gt_shape: tuple[int, int]) -> np.ndarray:
    """Resize a prediction to the GT's [H,W] (bilinear, OpenCV), if it differs."""
    if pred_u8.shape == gt_shape:
        return pred_u8
    return cv2.resize(pred_u8, (gt_shape[1], gt_shape[0]), interpolation=cv2.INTER_LINEAR)


def prepare_pair(pred_u8: np.ndarray, gt_u8: np.ndarray) -> PreparedPair:
    """pred_u8, gt_u8: uint8 [H,W] (prediction of any size) -> :class:`PreparedPair`."""
    if pred_u8.dtype != np.uint8 or gt_u8.dtype != np.uint8 or pred_u8.ndim != 2 or gt_u8.ndim != 2:
        raise ValueError(f"expected uint8 [H,W] maps, got pred {pred_u8.dtype} {pred_u8.shape} and gt "
                         f"{gt_u8.dtype} {gt_u8.shape}")
    pred_u8 = match_size(pred_u8, gt_u8.shape)
    gt = gt_u8 > 128
    lo, hi = int(pred_u8.min()), int(pred_u8.max())
    pred = pred_u8 / 255.0
    if hi != lo:
        pred = (pred - lo / 255.0) / (hi / 255.0 - lo / 255.0)
    quantised = (pred * 255).astype(np.uint8)
    # One pass for both histograms: bins 0..255 background, 256..511 foreground.
    both = np.bincount((quantised.astype(np.int32) + (gt.astype(np.int32) << 8)).ravel(), minlength=512)
    return PreparedPair(pred=pred, gt=gt, pred_u8=pred_u8, gt_u8=gt_u8, hist_fg=both[256:], hist_bg=both[:256])


def adaptive_threshold(pred: np.ndarray) -> float:
    """``min(2 * mean(pred), 1)``."""
    return min(2.0 * float(pred.mean()), 1.0)
