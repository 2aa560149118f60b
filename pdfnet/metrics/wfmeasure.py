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


# Offsets to a background pixel's nearest foreground pixel, by squared distance; among equally near ones the smallest
# column first, then the smallest row: the choice scipy's exact feature transform makes (checked on DIS masks).
_MAX_D2 = 18  # a pixel within 3 px (Chebyshev) of the foreground has its nearest foreground pixel within sqrt(18)
_OFFSETS_BY_D2: dict[int, list[tuple[int, int]]] = {}
for _dy in range(-4, 5):
    for _dx in range(-4, 5):
        if 0 < _dy * _dy + _dx * _dx <= _MAX_D2:
            _OFFSETS_BY_D2.setdefault(_dy * _dy + _dx * _dx, []).append((_dy, _dx))
for _offsets in _OFFSETS_BY_D2.values():
    _offsets.sort(key=lambda o: (o[1], o[0]))


def _distance_to_foreground(gt: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel to the nearest foreground pixel, float64 [H,W] (0 on the foreground).

    OpenCV's exact transform is fast but returns float32 that varies in the last bit between runs (it is threaded).
    A distance is the square root of an integer, so the integer is recovered and the root taken in float64: the
    values scipy's transform gives, deterministically. Beyond ~1000 px the rounding may be off by one, where the
    weight ``2 - 0.5**(d/5)`` is exactly 2 in float64 anyway.
    """
    d32 = cv2.distanceTransform((~gt).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.rint(d32.astype(np.float64) ** 2))


def _nearest_foreground_values(values: np.ndarray, gt: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """[H,W] map holding, on the foreground, ``values`` (given per foreground pixel, in row-major order) and, on each
    background pixel within 3 px of the foreground, the value of its nearest foreground pixel; 0 elsewhere.

    The reference takes the nearest pixel from a full Euclidean feature transform; only these background pixels
    reach the foreground through the 7x7 smoothing, so only they are resolved, each trying just the offsets of its
    own (exact) distance ``dist``.
    """
    out = np.zeros(gt.shape)
    out[gt] = values
    band = cv2.dilate(gt.view(np.uint8), np.ones((7, 7), np.uint8)).view(bool) & ~gt
    ys, xs = np.nonzero(band)
    if ys.size == 0:
        return out
    pad = 4
    width = gt.shape[1] + 2 * pad
    gt_flat = np.pad(gt, pad).ravel()
    value_flat = np.pad(out, pad).ravel()
    flat = (ys + pad) * width + (xs + pad)
    d2 = np.rint(dist[ys, xs] ** 2).astype(np.int64)
    found = np.zeros(ys.size)
    for sq, offsets in _OFFSETS_BY_D2.items():
        slot = np.flatnonzero(d2 == sq)
        todo = flat[slot]
        for dy, dx in offsets:
            if slot.size == 0:
                break
            candidate = todo + (dy * width + dx)
            hit = gt_flat[candidate]
            found[slot[hit]] = value_flat[candidate[hit]]
            slot, todo = slot[~hit], todo[~hit]
    out[ys, xs] = found
    return out


def weighted_f(pair: PreparedPair, beta: float = BETA) -> float:
    gt = pair.gt
    if pair.n_fg == 0:
        return 0.0
    pred = pair.pred
    dist = _distance_to_foreground(gt)
    error_fg = 1 - pred[gt]  # |pred - 1|; on the background the error is pred itself
    error_t = _nearest_foreground_values(error_fg, gt, dist)
    # Symmetric kernel: correlation (filter2D) equals convolution; BORDER_CONSTANT is scipy's mode='constant', cval 0.
    smoothed_fg = cv2.filter2D(error_t, -1, _KERNEL, borderType=cv2.BORDER_CONSTANT)[gt]
    weighted_fg_sum = float(np.where(smoothed_fg < error_fg, smoothed_fg, error_fg).sum())
    background = ~gt
    importance = 2 - np.exp(np.log(0.5) / 5 * dist[background])
    fp = float((pred[background] * importance).sum())
    tp = pair.n_fg - weighted_fg_sum
    recall = 1 - weighted_fg_sum / pair.n_fg
    precision = tp / (tp + fp + EPS)
    return (1 + beta) * recall * precision / (recall + beta * precision + EPS)
