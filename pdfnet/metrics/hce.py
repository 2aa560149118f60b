"""Human Correction Efforts (HCE), the official DIS definition (Qin et al., ECCV 2022, ``hce_metric_main.py``).

HCE estimates how many mouse clicks a person needs to fix a prediction: false-positive and false-negative regions,
relaxed by ``relax`` erosion/dilation steps of a 3x3 cross, are traced; the parts of their contours that border
correct regions are simplified with Douglas-Peucker (``epsilon``) and each control point counts, plus one per
independent region that touches no such border. The GT skeleton keeps thin structures as false negatives.

Both maps are thresholded ``> 128`` on the raw uint8 values (no min-max stretch): that is the official protocol and
differs from PySODMetrics 1.6.2's ``HumanCorrectionEffortMeasure``.

:func:`hce_counts` is the fast implementation (vectorised contour filtering, OpenCV labelling, bounding-box cropped
skeletonisation, optional skeleton cache); :func:`hce_counts_reference` follows the official script step by step,
point by point, and serves as the test oracle and the benchmark baseline.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from ..data.io import atomic_write_bytes

RELAX = 5
EPSILON = 2.0
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)  # skimage disk(1)


# scikit-image's Zhang-Suen lookup table (``skimage.morphology.skeletonize``), indexed by the 8-neighbourhood code
# 1*NW + 2*N + 4*NE + 8*E + 16*SE + 32*S + 64*SW + 128*W: 1 = removable in the first sub-iteration, 2 = in the
# second, 3 = in both. It differs from the textbook conditions in 25 entries, so it is kept as data.
_ZHANG_SUEN_LUT = np.array([
    0, 0, 0, 1, 0, 0, 1, 3, 0, 0, 3, 1, 1, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 3, 0, 3, 3,
    0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 2, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 2, 0,
    0, 0, 3, 1, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 3, 1, 3, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 0, 1, 0, 0, 0, 0, 2, 2, 0, 0, 2, 0, 0, 0,
], dtype=np.uint8)
_REMOVABLE = (np.isin(_ZHANG_SUEN_LUT, (1, 3)), np.isin(_ZHANG_SUEN_LUT, (2, 3)))  # per sub-iteration
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))  # bit k of the code


def zhang_suen_skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a bool [H,W] mask, identical to ``skimage.morphology.skeletonize`` (Zhang-Suen with scikit-image's
    table; alternating parallel sub-iterations until nothing changes), computed on a work list.

    A pixel can only be removed in sub-iteration s if it has not been checked against table s since its
    neighbourhood last changed, so each sub-iteration looks only at those pixels (initially every foreground pixel
    with a background neighbour; then the neighbours of removed pixels), not at the whole image.
    """
    h, w = mask.shape
    width = w + 2
    image = np.zeros((h + 2, width), dtype=np.uint8)
    image[1:-1, 1:-1] = mask
    flat = image.ravel()
    offsets = np.array([dy * width + dx for dy, dx in _NEIGHBOURS])
    interior = cv2.erode(image, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    border = np.flatnonzero((image > interior).ravel())  # foreground with at least one background neighbour
    todo = [border, border]  # pixels still to check against each sub-iteration's table
    step = 0
    while todo[0].size or todo[1].size:
        pixels = todo[step]
        pixels = pixels[flat[pixels] != 0]
        todo[step] = pixels[:0]
        if pixels.size:
            codes = np.zeros(pixels.size, dtype=np.uint8)
            for bit, offset in enumerate(offsets):
                codes |= flat[pixels + offset] << bit
            gone = pixels[_REMOVABLE[step][codes]]
            if gone.size:
                flat[gone] = 0  # after every code of this sub-iteration was read: a parallel update
                exposed = (gone[:, None] + offsets[None, :]).ravel()
                exposed = exposed[flat[exposed] != 0]
                todo = [np.unique(np.concatenate([t, exposed])) for t in todo]
        step ^= 1
    return image[1:-1, 1:-1].astype(bool)


def gt_skeleton(gt_u8: np.ndarray) -> np.ndarray:
    """``skimage.morphology.skeletonize(gt > 128)`` (the official HCE's skeleton), bool [H,W]; see
    :func:`zhang_suen_skeleton`."""
    return zhang_suen_skeleton(gt_u8 > 128)


class SkeletonCache:
    """GT skeletons on disk, keyed by the GT's binary content (not its name), safe across runs and datasets."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _key(self, gt_u8: np.ndarray) -> str:
        packed = np.packbits(gt_u8 > 128)
        digest = hashlib.sha1(packed.tobytes() + np.asarray(gt_u8.shape, np.int64).tobytes()).hexdigest()
        return digest

    def get(self, gt_u8: np.ndarray) -> np.ndarray:
        path = self.root / f"{self._key(gt_u8)}.npy"
        if path.is_file():
            try:
                packed = np.load(path)
                return np.unpackbits(packed, count=gt_u8.size).reshape(gt_u8.shape).astype(bool)
            except (OSError, ValueError):
                pass  # unreadable cache entry: recompute and overwrite
        skeleton = gt_skeleton(gt_u8)
        import io

        buf = io.BytesIO()
        np.save(buf, np.packbits(skeleton))
        atomic_write_bytes(path, buf.getvalue())
        return skeleton


def _relaxed_errors(pred_u8: np.ndarray, gt_u8: np.ndarray, skeleton: np.ndarray, relax: int):
    gt = gt_u8 > 128
    rs = pred_u8 > 128
    tp = gt & rs
    fp = rs & ~gt
    fn = gt & ~rs
    union_eroded = cv2.erode((gt | rs).astype(np.uint8), _CROSS, iterations=relax).astype(bool)

    fp_r = fp & union_eroded
    keep_out = ~(tp | fn)
    for _ in range(relax):
        fp_r = cv2.dilate(fp_r.astype(np.uint8), _CROSS).astype(bool) & keep_out
    fp_r &= fp

    fn_r = fn & union_eroded
    keep_out = ~(tp | fp)
    for _ in range(relax):
        fn_r = cv2.dilate(fn_r.astype(np.uint8), _CROSS).astype(bool) & keep_out
    fn_r = (fn & fn_r) | (skeleton & ~tp)  # thin GT structures missed by the prediction always need fixing
    return tp, fp_r, fn_r


def _contours(mask: np.ndarray):
    return cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)[0]


def _border_runs(contours, mask: np.ndarray, cond: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Runs of contour points that border ``cond`` (dilated by the cross), each pixel counted once, and the number of
    connected regions of ``mask`` that no run touches. Vectorised version of the official ``filter_bdy_cond``."""
    n_labels, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    # Official quirk: it zeroes the counter of label 0 assuming that is the background; a mask without background
    # (one region covering the image) therefore counts 0 independent regions.
    n_regions = n_labels - 1 if not mask.all() else 0
    if not contours:
        return [], n_regions
    cond = cv2.dilate(cond.astype(np.uint8), _CROSS)
    lengths = np.array([len(c) for c in contours])
    points = np.concatenate([c.reshape(-1, 2) for c in contours])  # (x, y), in tracing order
    ends = np.cumsum(lengths)
    starts = ends - lengths
    xs, ys = points[:, 0], points[:, 1]
    first_visit = np.zeros(len(points), dtype=bool)
    first_visit[np.unique(ys.astype(np.int64) * mask.shape[1] + xs, return_index=True)[1]] = True
    # A pixel is used the first time it is met with cond set; cond is fixed, so that is its first visit overall.
    valid = (cond[ys, xs] != 0) & first_visit
    touched = np.unique(labels[ys[valid], xs[valid]])
    independent = n_regions - int(np.count_nonzero(touched))

    is_start = np.zeros(len(points), dtype=bool)
    is_start[starts] = True
    is_end = np.zeros(len(points), dtype=bool)
    is_end[ends - 1] = True
    prev_valid = np.concatenate([[False], valid[:-1]]) & ~is_start
    next_valid = np.concatenate([valid[1:], [False]]) & ~is_end
    run_starts = np.flatnonzero(valid & ~prev_valid)
    run_stops = np.flatnonzero(valid & ~next_valid) + 1
    run_contour = np.searchsorted(ends, run_starts, side="right")

    runs: list[np.ndarray] = []
    i = 0
    while i < len(run_starts):
        j = i
        while j + 1 < len(run_starts) and run_contour[j + 1] == run_contour[i]:
            j += 1
        contour_runs = [points[run_starts[k]:run_stops[k]] for k in range(i, j + 1)]
        if len(contour_runs) > 1:
            # The tracing started mid-boundary: join the last run with the first (reversed) when they touch.
            fx, fy = contour_runs[0][0]
            lx, ly = contour_runs[-1][-1]
            if max(abs(int(fx) - int(lx)), abs(int(fy) - int(ly))) == 1:
                contour_runs[-1] = np.concatenate([contour_runs[-1], contour_runs[0][::-1]])
                del contour_runs[0]
        runs.extend(contour_runs)
        i = j + 1
    return runs, independent


def _control_points(runs: list[np.ndarray], epsilon: float) -> int:
    return sum(len(cv2.approxPolyDP(r.reshape(-1, 1, 2).astype(np.int32), epsilon, False)) for r in runs)


def hce_counts(pred_u8: np.ndarray, gt_u8: np.ndarray, skeleton: np.ndarray | None = None, relax: int = RELAX,
               epsilon: float = EPSILON) -> tuple[int, int, int, int]:
    """(FP control points, FP independent regions, FN control points, FN independent regions); HCE is their sum.

    pred_u8, gt_u8: uint8 [H,W] of the same size; skeleton: bool [H,W] of the GT (computed when None).
    """
    if skeleton is None:
        skeleton = gt_skeleton(gt_u8)
    tp, fp_r, fn_r = _relaxed_errors(pred_u8, gt_u8, skeleton, relax)
    fp_runs, fp_indep = _border_runs(_contours(fp_r), fp_r, tp | fn_r)
    fn_runs, fn_indep = _border_runs(_contours(fn_r), fn_r, ~(tp | fp_r | fn_r))
    return _control_points(fp_runs, epsilon), fp_indep, _control_points(fn_runs, epsilon), fn_indep


# --- reference: the official script's semantics, literally (slow; oracle for tests and benchmarks) -----------------

def _border_runs_reference(contours, mask: np.ndarray, cond: np.ndarray) -> tuple[list[np.ndarray], int]:
    from skimage.measure import label  # the reference needs scikit-image (dev extras); the fast path does not

    cond = cv2.dilate(cond.astype(np.uint8), _CROSS)
    labels = label(mask)
    independent = np.ones(len(np.unique(labels)))
    independent[0] = 0
    visited = np.zeros(mask.shape)
    runs = []
    for contour in contours:
        pieces, current = [], []
        for x, y in contour[:, 0, :]:
            if cond[y, x] == 0 or visited[y, x] != 0:
                if current:
                    pieces.append(current)
                    current = []
                continue
            current.append([x, y])
            visited[y, x] += 1
            independent[labels[y, x]] = 0
        if current:
            pieces.append(current)
        if len(pieces) > 1:
            (fx, fy), (lx, ly) = pieces[0][0], pieces[-1][-1]
            if (abs(fx - lx) == 1 and fy == ly) or (fx == lx and abs(fy - ly) == 1) or (
                    abs(fx - lx) == 1 and abs(fy - ly) == 1):
                pieces[-1].extend(pieces[0][::-1])
                del pieces[0]
        runs.extend(np.array(p)[:, np.newaxis, :] for p in pieces)
    return runs, int(np.sum(independent))


def hce_counts_reference(pred_u8: np.ndarray, gt_u8: np.ndarray, skeleton: np.ndarray | None = None,
                         relax: int = RELAX, epsilon: float = EPSILON) -> tuple[int, int, int, int]:
    """Same result as :func:`hce_counts`, computed as the official script does (whole-image skeletonize, skimage
    labelling, a Python loop over every contour point)."""
    if skeleton is None:
        from skimage.morphology import skeletonize

        skeleton = skeletonize(gt_u8 > 128)
    tp, fp_r, fn_r = _relaxed_errors(pred_u8, gt_u8, skeleton, relax)
    fp_runs, fp_indep = _border_runs_reference(_contours(fp_r), fp_r, tp | fn_r)
    fn_runs, fn_indep = _border_runs_reference(_contours(fn_r), fn_r, ~(tp | fp_r | fn_r))
    count = lambda runs: sum(len(cv2.approxPolyDP(r.astype(np.int32), epsilon, False)) for r in runs)  # noqa: E731
    return count(fp_runs), fp_indep, count(fn_runs), fn_indep
