"""Pseudo-depth with Depth Anything V2 (transformers)."""

from .anything import MODEL_IDS, DepthEstimator, lower_bound_size

__all__ = ["DepthEstimator", "MODEL_IDS", "lower_bound_size"]
