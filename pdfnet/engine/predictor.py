"""Every inference option in one place: :class:`Predictor`, used by predict, evaluate, validation and the demo."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config
from .inference import predict_model_size, probs_at_size
from .tiling import predict_probs_tiled


@dataclass
class Predictor:
    """Every inference option in one place; used by predict.py and evaluate.py.

    ``batch_size`` images (plain mode) or tiles (tiled mode) run per forward pass. ``tile``: see
    :func:`pdfnet.engine.tiling.predict_probs_tiled` (images no larger than one tile take the plain path).
    """

    model: torch.nn.Module
    size: int = 1024
    tta: bool = False
    half: bool = False
    batch_size: int = 1
    tile: bool = False
    tile_overlap: int = 0  # 0: a quarter of the tile (model) size
    tile_skip_confidence: float = 0.98
    tile_progress: Callable[[int, int], None] | None = None  # (tiles done, tiles of this image), e.g. a progress bar

    @classmethod
    def from_config(cls, model: torch.nn.Module, cfg: Config, **overrides) -> Predictor:
        """The config's ``data.size`` and ``eval.*`` inference knobs; keyword arguments that are not None win."""
        options = dict(size=cfg.data.size, tta=cfg.eval.tta, half=cfg.eval.half, batch_size=cfg.eval.batch_size,
                       tile=cfg.eval.tile, tile_overlap=cfg.eval.tile_overlap,
                       tile_skip_confidence=cfg.eval.tile_skip_confidence)
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model, **options)

    def __post_init__(self) -> None:
        if self.size % 64 or self.size < 128:
            raise ValueError(f"--size must be a multiple of 64 and at least 128 (the model's input), got {self.size}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {self.batch_size}")

    @property
    def overlap(self) -> int:
        """Minimum tile overlap in pixels (``tile_overlap``, or a quarter of the model size when 0)."""
        return self.tile_overlap or self.size // 4

    @property
    def images_per_call(self) -> int:
        """How many images to hand to one call: ``batch_size``, or 1 in tiled mode (the batch is one image's tiles)."""
        return 1 if self.tile else self.batch_size

    def __call__(self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 RGB images [H_i,W_i,3] and their depth maps [H_i,W_i] -> probabilities float32 [H_i,W_i]."""
        if self.tile:
            return [predict_probs_tiled(self.model, im, de, self.size, tta=self.tta, half=self.half,
                                        overlap=self.overlap, batch_size=self.batch_size,
                                        skip_confidence=self.tile_skip_confidence, progress=self.tile_progress)
                    for im, de in zip(images, depths)]
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            probs = predict_model_size(self.model, images[chunk], depths[chunk], self.size, self.tta, self.half)
            out += [probs_at_size(p, *im.shape[:2]) for p, im in zip(probs, images[chunk])]
        return out
