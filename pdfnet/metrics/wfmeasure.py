"""Weighted F-measure (Margolin et al., CVPR 2014), beta = 1, as the reference MATLAB/PySODMetrics code.

Errors of background pixels are taken at their nearest foreground pixel (pixel dependency), smoothed with a 7x7
Gaussian (sigma 5, zero border) and weighted by distance from the foreground (pixel importance).
"""

from __future__ import annotations

import cv2
import numpy as np

from .prepare import EPS, PreparedPair

BETA = 1.0


def _gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half:half + 1, -half:half + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    k[k < np.finfo(k.dtype).eps * k.max()] = 0
    return k / k.sum()


_KERNEL = _gaussian_kernel()


# Offsets to search for a background pixel's nearest foreground pixel, nearest first; among equally near ones the
# smallest column, then the smallest row: the choice scipy's exact feature transform makes (checked on DIS masks).
_MAX_D2 = 18  # a pixel within 3 px (Chebyshev) of the foreground has its nearest foreground pixel within sqrt(18)
_OFFSETS = sorted(((dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if dy * dy + dx * dx <= _MAX_D2),
                  key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1], o[0]))


def _error_at_nearest_foreground(error: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``error`` with each background pixel within 3 px of the foreground replaced by the error at its nearest
    foreground pixel (the reference takes it from a full Euclidean feature transform; only these pixels reach the
    foreground through the 7x7 smoothing, so only they are computed). Other background pixels are set to 0."""
    band = cv2.dilate(gt.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~gt
    out = np.where(gt, error, 0.0)
    ys, xs = np.nonzero(band)
    if ys.size == 0:
        return out
    pad = 4
    width = gt.shape[1] + 2 * pad
    gt_flat = np.pad(gt, pad).ravel()
    error_flat = np.pad(error, pad).ravel()
    todo = (ys + pad) * width + (xs + pad)  # flat indices of the pixels still looking for their nearest
    slot = np.arange(ys.size)
    value = np.zeros(ys.size)
    for dy, dx in _OFFSETS:
        candidate = todo + (dy * width + dx)
        hit = gt_flat[candidate]
        if hit.any():
            value[slot[hit]] = error_flat[candidate[hit]]
            todo, slot = todo[~hit], slot[~hit]
            if todo.size == 0:
                break
    out[ys, xs] = value
    return out


def weighted_f(pair: PreparedPair, beta: float = BETA) -> float:
    gt, pred = pair.gt, pair.pred
    if pair.n_fg == 0:
        return 0.0
    # Exact Euclidean distance to the nearest foreground pixel (OpenCV's exact algorithm; float32 distances).
    dist = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    error = np.abs(pred - gt)
    error_t = _error_at_nearest_foreground(error, gt)
    # Symmetric kernel: correlation (filter2D) equals convolution; BORDER_CONSTANT is scipy's mode='constant', cval 0.
    smoothed = cv2.filter2D(error_t, -1, _KERNEL, borderType=cv2.BORDER_CONSTANT)
    min_e = np.where(gt & (smoothed < error), smoothed, error)
    importance = np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * dist))
    weighted = min_e * importance
    weighted_fg_sum = float(weighted[gt].sum())
    tp = pair.n_fg - weighted_fg_sum
    fp = float(weighted[~gt].sum())
    recall = 1 - weighted_fg_sum / pair.n_fg
    precision = tp / (tp + fp + EPS)
    return (1 + beta) * recall * precision / (recall + beta * precision + EPS)
