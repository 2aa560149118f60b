"""PDFNet's training loss: a weighted sum of registered loss terms, deep-supervised over the decoder's outputs.

    L = Σ_terms weight_t · Σ_i w_i · term_t(output_i)

with w_0 = 1 for the main output and ``loss.side_weight`` (0.5) for each side output, over the segmentation outputs
or the depth-head outputs as the term says. The official terms and weights: ``seg`` (structure + 0.5 SSIM, weight
1), ``integrity`` (the depth integrity prior, 1/2), ``depth`` (SiLog on the depth head, 1/10). A term of your own is
one class in a file here (see dice.py) and one config value, ``loss.terms: {name: weight}``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config, LossConfig
from ..ops import checkpointed, normalize_depth
from ..registry import LOSS_TERMS
from .terms import (
    IntegrityPriorLoss,
    LossTerm,
    SSIMLoss,
    Targets,
    boundary_weight,
    silog_loss,
    structure_loss,
)

BUILT_IN_TERMS = ("seg", "integrity", "depth")


def term_weights(cfg: LossConfig) -> dict[str, float]:
    """{term name: weight} of a loss config: the built-in terms (weights from their keys), then ``loss.terms``."""
    weights = {name: float(getattr(cfg, LOSS_TERMS.get(name).weight_key)) for name in BUILT_IN_TERMS}
    for name, weight in cfg.terms.items():
        if name in weights:
            raise ValueError(f"loss.terms.{name}: set the weight of the built-in term {name!r} with "
                             f"loss.{LOSS_TERMS.get(name).weight_key}")
        weights[name] = float(weight)
    return weights


class PDFNetLoss(nn.Module):
    """Deep-supervised total loss. Returns (total, parts): ``parts`` holds every term's deep-supervised sum,
    unweighted and detached, by name, plus ``main`` (the main output's ``seg`` term).

    ``recompute=True`` (``model.grad_checkpointing: all``) recomputes each output's terms in backward instead of
    keeping their full-resolution intermediates (about 1.5 GiB at 1024², batch 2); the values are unchanged."""

    def __init__(self, cfg: LossConfig | None = None, recompute: bool = False, variant: str = "v2026") -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.recompute = recompute
        self.weights = term_weights(self.cfg)
        self.terms = nn.ModuleDict({name: LOSS_TERMS.get(name)(self.cfg, variant) for name in self.weights})

    @classmethod
    def from_config(cls, cfg: Config) -> PDFNetLoss:
        """The loss a run's config asks for: its ``loss`` terms and weights, the official smoothing of its
        ``model.variant``, recomputation in backward under ``model.grad_checkpointing: all``."""
        return cls(cfg.loss, recompute=cfg.model.grad_checkpointing == "all", variant=cfg.model.variant)

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(self.terms) + ("main",)

    def _output_terms(self, names: list[str], logits: torch.Tensor, targets: Targets) -> list[torch.Tensor]:
        return [self.terms[name](logits, targets) for name in names]

    def forward(self, seg_logits: list[torch.Tensor], mask: torch.Tensor, depth_target: torch.Tensor,
                depth_logits: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        mask = mask.float()
        # The official training forward min-max normalises the depth target after augmentation (over the whole
        # batch); per sample here, as the input depth: identical at batch 1, independent of batch-mates otherwise.
        targets = Targets(mask, normalize_depth(depth_target.float()), boundary_weight(mask, cfg.edge_weight))
        sums = {name: mask.new_zeros(()) for name in self.terms}
        main = None
        for kind, outputs in (("seg", seg_logits), ("depth", depth_logits or [])):
            names = [n for n, term in self.terms.items() if term.outputs == kind and self.weights[n]]
            if not names:
                continue
            for i, logits in enumerate(outputs):
                values = checkpointed(self.recompute, self._output_terms, names, logits, targets)
                side = 1.0 if i == 0 else cfg.side_weight
                for name, value in zip(names, values):
                    sums[name] = sums[name] + side * value
                if i == 0 and kind == "seg" and "seg" in names:
                    main = values[names.index("seg")]
        total = mask.new_zeros(())
        for name, value in sums.items():
            total = total + self.weights[name] * value
        # Detached tensors, not floats: reading them is the caller's choice (a device sync on CUDA).
        parts = {name: value.detach() for name, value in sums.items()}
        parts["main"] = (main if main is not None else sums["seg"]).detach()
        return total, parts


__all__ = ["BUILT_IN_TERMS", "IntegrityPriorLoss", "LossTerm", "PDFNetLoss", "SSIMLoss", "Targets",
           "boundary_weight", "silog_loss", "structure_loss", "term_weights"]
