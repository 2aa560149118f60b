"""Build what a config describes, for the device it will run on: the model and the loss.

``model.impl`` is decided here, once, when the model is built:

* ``reference``: the model of pdfnet/models/ as written (the paper in plain PyTorch);
* ``lean``: the same model, then each module with a CPU form in :mod:`pdfnet.lean` given that form's class (same
  parameters and state-dict keys; the class swap happens in :func:`pdfnet.lean.make_lean`, right after
  construction, so the model files stay free of device logic);
* ``auto``: ``lean`` on a CPU, ``reference`` on any other device (CUDA, MPS, and the meta device used to count the
  ops a GPU would run). No GPU measurement has shown the CPU forms to help there; see docs/benchmarks.md.

Every entry point (training, evaluation, prediction, export, the demo, the benchmarks) builds through here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .config import Config, ModelConfig
from .hub_files import hub_config
from .lean import is_lean
from .losses import PDFNetLoss
from .models import PDFNet
from .registry import IMPLEMENTATIONS


def _reference(module: nn.Module, channels_last_in_training: bool | None = None) -> nn.Module:
    return module


IMPLEMENTATIONS.register("reference", _reference)


def resolve_impl(impl: str, device: str | torch.device) -> str:
    """``model.impl`` for a device: ``auto`` -> ``lean`` on CPU, ``reference`` elsewhere; others as given."""
    if impl != "auto":
        return impl
    return "lean" if torch.device(device).type == "cpu" else "reference"


def build_model(cfg: Config | ModelConfig, device: str | torch.device = "cpu",
                state: Mapping[str, torch.Tensor] | None = None) -> PDFNet:
    """The model of ``cfg`` on ``device``, in the implementation ``model.impl`` picks there. ``state``: build it
    around these weights (strict: every key, every shape; RuntimeError otherwise) instead of a random init. Given a
    whole :class:`Config`, the model also carries it, so ``model.save_pretrained`` writes it (input size and
    inference settings included)."""
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    device = torch.device(device)
    model = PDFNet.from_config(model_cfg, state)
    IMPLEMENTATIONS.get(resolve_impl(model_cfg.impl, device))(model)
    if isinstance(cfg, Config):
        model._hub_mixin_config = hub_config(cfg)
    return model.to(device)


def build_loss(cfg: Config, device: str | torch.device = "cpu") -> PDFNetLoss:
    """The training loss of ``cfg`` (:meth:`PDFNetLoss.from_config`) on ``device``, in the same implementation as
    the model."""
    loss = PDFNetLoss.from_config(cfg)
    IMPLEMENTATIONS.get(resolve_impl(cfg.model.impl, device))(loss)
    return loss.to(device)


def implementation_of(model: nn.Module) -> str:
    """``lean`` when any module of ``model`` runs a CPU form, else ``reference``."""
    return "lean" if is_lean(model) else "reference"
