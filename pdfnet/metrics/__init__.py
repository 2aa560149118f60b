"""DIS metrics: F/E/S-measures, weighted F, MAE (PySODMetrics conventions) and HCE (official DIS definition)."""

from .evaluator import METRIC_KEYS, Evaluator, as_u8_map

__all__ = ["METRIC_KEYS", "Evaluator", "as_u8_map"]
