"""Pseudo-depth with Depth Anything V2 (transformers). Attributes load lazily, so that ``pdfnet.depth.ids``
(the model ids, for command-line choices) imports without torch."""

from __future__ import annotations

from typing import Any

from .ids import MODEL_IDS


def __getattr__(name: str) -> Any:
    if name in ("DepthEstimator", "lower_bound_size"):
        from . import anything

        return getattr(anything, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DepthEstimator", "MODEL_IDS", "lower_bound_size"]
