"""Dataset-level DIS evaluation: accumulate per-image statistics, aggregate as PySODMetrics does.

Curves (F, E) are averaged over images first, then reduced (max / mean). ``maxF_meanPR`` is a different protocol,
the one of the official PDFNet evaluation: precision and recall curves are averaged over images, then F is computed
from the averaged curves and maximised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..data.io import probs_to_u8
from ..workers import process_pool
from .emeasure import adaptive_e, e_curve
from .fmeasure import BETA2, adaptive_f, f_from_pr, mae, pr_curves
from .hce import SkeletonCache, gt_skeleton, hce_counts
from .prepare import prepare_pair
from .smeasure import s_measure
from .wfmeasure import weighted_f

METRIC_KEYS = ("maxF", "meanF", "adpF", "wF", "MAE", "Sm", "meanEm", "maxEm", "adpEm", "HCE")
LOWER_IS_BETTER = {"MAE", "HCE"}


def as_u8_map(x: Any) -> np.ndarray:
    """uint8 maps pass through; float arrays/tensors of probabilities in [0,1] are quantised like a saved PNG."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    x = np.squeeze(x)
    if x.ndim != 2:
        raise ValueError(f"expected a single [H,W] map, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool:
        return x.astype(np.uint8) * 255
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise ValueError("float maps must be probabilities in [0,1] (apply sigmoid to logits first)")
        return probs_to_u8(x)
    raise ValueError(f"unsupported map type {x.dtype}; pass uint8 or float probabilities")


def image_statistics(pred_u8: np.ndarray, gt_u8: np.ndarray, with_hce: bool = True,
                     skeleton: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the dataset metrics need from one pair, plus that pair's own metric values."""
    pair = prepare_pair(pred_u8, gt_u8)
    precision, recall = pr_curves(pair)
    f_curve = f_from_pr(precision, recall)
    em_curve = e_curve(pair)
    stats: dict[str, Any] = {
        "precision": precision, "recall": recall, "f_curve": f_curve, "e_curve": em_curve,
        "adpF": adaptive_f(pair), "adpEm": adaptive_e(pair), "MAE": mae(pair), "Sm": s_measure(pair),
        "wF": weighted_f(pair),
    }
    if with_hce:
        if skeleton is None:
            skeleton = gt_skeleton(pair.gt_u8)
        stats["HCE"] = float(sum(hce_counts(pair.pred_u8, pair.gt_u8, skeleton)))
    return stats


def _per_image_values(stats: dict[str, Any]) -> dict[str, float]:
    values = {"maxF": float(stats["f_curve"].max()), "meanF": float(stats["f_curve"].mean()),
              "maxEm": float(stats["e_curve"].max()), "meanEm": float(stats["e_curve"].mean())}
    values.update({k: float(stats[k]) for k in ("adpF", "wF", "MAE", "Sm", "adpEm", "HCE") if k in stats})
    return values


def _worker(args: tuple) -> tuple[str, dict[str, Any]]:
    name, pred_u8, gt_u8, with_hce, cache_dir = args
    skeleton = None
    if with_hce and cache_dir:
        skeleton = SkeletonCache(cache_dir).get(gt_u8)
    return name, image_statistics(pred_u8, gt_u8, with_hce, skeleton)


class Evaluator:
    """Accumulates DIS metrics over a dataset.

    ``update(pred, gt, name)``: pred uint8 [H,W] (any size, resized to the GT) or float probabilities in [0,1]
    (array or tensor, quantised exactly like a saved PNG); gt uint8 [H,W]. ``compute()`` returns
    ``{"metrics": {key: float}, "n_images": int, "per_image": {name: {key: float}}}``.

    ``hce``: compute HCE (the slowest metric). ``skeleton_cache``: folder caching GT skeletons by content.
    ``workers``: process pool size for :meth:`update_many`.
    """

    def __init__(self, hce: bool = True, skeleton_cache: str | os.PathLike | None = None, workers: int = 1) -> None:
        self.with_hce = hce
        self.cache = SkeletonCache(skeleton_cache) if skeleton_cache else None
        self.workers = max(1, workers)
        self._stats: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._stats)

    def _check_name(self, name: str) -> None:
        if name in self._stats:
            raise ValueError(f"image {name!r} was already evaluated")

    def update(self, pred: Any, gt: Any, name: str) -> dict[str, float]:
        """Add one pair; returns its per-image metric values."""
        self._check_name(name)
        pred_u8, gt_u8 = as_u8_map(pred), as_u8_map(gt)
        skeleton = self.cache.get(gt_u8) if (self.with_hce and self.cache) else None
        self._stats[name] = image_statistics(pred_u8, gt_u8, self.with_hce, skeleton)
        return _per_image_values(self._stats[name])

    def add_statistics(self, name: str, stats: dict[str, Any]) -> None:
        """Add one pair's :func:`image_statistics` computed elsewhere (another process or rank)."""
        self._check_name(name)
        if self.with_hce and "HCE" not in stats:
            raise ValueError(f"statistics of {name!r} lack HCE but this evaluator computes it")
        self._stats[name] = stats

    def statistics(self) -> dict[str, dict[str, Any]]:
        """{name: image statistics} in the order added, for :meth:`add_statistics` elsewhere (e.g. on rank 0)."""
        return dict(self._stats)

    def update_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]], progress=None) -> None:
        """Add (name, pred_u8, gt_u8) pairs, in parallel when ``workers > 1``. ``progress`` is called per pair."""
        cache_dir = str(self.cache.root) if self.cache else None
        jobs = ((name, as_u8_map(p), as_u8_map(g), self.with_hce, cache_dir) for name, p, g in items)
        if self.workers == 1:
            results = map(_worker, jobs)
            for name, stats in results:
                self._check_name(name)
                self._stats[name] = stats
                if progress:
                    progress(name)
            return
        with process_pool(self.workers) as pool:
            for name, stats in pool.map(_worker, jobs, chunksize=1):
                self._check_name(name)
                self._stats[name] = stats
                if progress:
                    progress(name)

    def compute(self) -> dict[str, Any]:
        if not self._stats:
            raise ValueError("no images were evaluated")
        stats = list(self._stats.values())
        f_curve = np.mean([s["f_curve"] for s in stats], axis=0)
        e_curve = np.mean([s["e_curve"] for s in stats], axis=0)
        precision = np.mean([s["precision"] for s in stats], axis=0)
        recall = np.mean([s["recall"] for s in stats], axis=0)
        mean_pr_f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall + 1e-8)
        metrics = {
            "maxF": float(f_curve.max()), "meanF": float(f_curve.mean()),
            "adpF": float(np.mean([s["adpF"] for s in stats])), "wF": float(np.mean([s["wF"] for s in stats])),
            "MAE": float(np.mean([s["MAE"] for s in stats])), "Sm": float(np.mean([s["Sm"] for s in stats])),
            "meanEm": float(e_curve.mean()), "maxEm": float(e_curve.max()),
            "adpEm": float(np.mean([s["adpEm"] for s in stats])),
        }
        if self.with_hce:
            metrics["HCE"] = float(np.mean([s["HCE"] for s in stats]))
        metrics["maxF_meanPR"] = float(mean_pr_f.max())
        return {"metrics": metrics, "n_images": len(stats),
                "per_image": {name: _per_image_values(s) for name, s in self._stats.items()}}
