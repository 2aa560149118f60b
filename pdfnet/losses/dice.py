"""An example of a loss term of your own: the soft Dice loss on every segmentation output.

Switched on with a weight in the config (configs/examples/loss_dice.yaml)::

    loss:
      terms: {dice: 0.5}

The trainer then logs ``loss_dice`` beside the built-in terms.
"""

from __future__ import annotations

import torch

from ..registry import LOSS_TERMS
from .terms import LossTerm, Targets, to_size


@LOSS_TERMS.register("dice")
class DiceTerm(LossTerm):
    """1 − (2·Σ p·m + 1) / (Σ p + Σ m + 1) per image, averaged over the batch; p = σ(logits)."""

    def forward(self, logits: torch.Tensor, t: Targets) -> torch.Tensor:
        p = to_size(logits, t.mask).sigmoid()
        inter = (p * t.mask).sum(dim=(1, 2, 3))
        return (1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + t.mask.sum(dim=(1, 2, 3)) + 1)).mean()
