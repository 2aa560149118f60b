"""PySODMetrics as the oracle for the nine standard metrics (tests and benchmarks only; needs the dev extras)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from .prepare import match_size


def pysodmetrics_values(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Dataset metrics of (pred_u8, gt_u8) pairs computed by pysodmetrics 1.6.2, keyed as ours. Predictions of
    another size are resized to the GT first, as our evaluator does."""
    import py_sod_metrics as sod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pysodmetrics announces Fmeasure's deprecation on construction
        fm, em, sm, wfm, mae = sod.Fmeasure(), sod.Emeasure(), sod.Smeasure(), sod.WeightedFmeasure(), sod.MAE()
        for pred, gt in pairs:
            pred = match_size(pred, gt.shape)
            for metric in (fm, em, sm, wfm, mae):
                metric.step(pred, gt)
    f, e = fm.get_results()["fm"], em.get_results()["em"]
    return {"maxF": float(f["curve"].max()), "meanF": float(f["curve"].mean()), "adpF": float(f["adp"]),
            "wF": float(wfm.get_results()["wfm"]), "MAE": float(mae.get_results()["mae"]),
            "Sm": float(sm.get_results()["sm"]), "meanEm": float(e["curve"].mean()), "maxEm": float(e["curve"].max()),
            "adpEm": float(e["adp"])}
