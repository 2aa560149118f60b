"""The optimizer of a training run (AdamW, as the official recipe)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import OptimConfig


def make_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters with ``optim.*``; on CUDA its fused kernel (one launch for all parameters
    instead of a foreach loop: the same update to rounding)."""
    fused = True if torch.device(device).type == "cuda" else None
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, fused=fused)
