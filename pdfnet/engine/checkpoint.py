"""Checkpoints: atomic writes, safe (``weights_only``) reads, and models rebuilt from either our or official files.

Our checkpoint format is a dict with at least ``model`` (state dict), ``config`` (the resolved config as a plain dict)
and ``epoch``; training adds optimizer/scheduler/scaler/EMA/RNG state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..data.io import atomic_write
from ..hub_files import HubFilesError
from ..models import PDFNet, build_model_with_weights
from ..models.official import is_official_state_dict, load_official, unwrap_state_dict
from .hub import is_pretrained_source, load_pretrained

FORMAT = "pdfnet-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file and a rename: a crash never leaves a partial checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def make_checkpoint(model: torch.nn.Module, cfg: Config, epoch: int = 0, **extra: Any) -> dict[str, Any]:
    """Our checkpoint dict for ``model`` (unwrapped from DDP/compile) with the resolved config."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "model": state, "config": config_to_dict(cfg), "epoch": epoch, **extra}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; clear errors for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of arbitrary objects, not a torch file at all...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]} "
                              "(the file is corrupt, truncated, or not a PyTorch checkpoint)") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def model_from_checkpoint(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> tuple[PDFNet, Config]:
    """Build the model stored in ``path``: our ``.pth``, an official state dict (converted on the fly), a
    ``save_pretrained`` folder or a Hugging Face Hub id; eval mode.

    Returns (model, config). For official files the config is the defaults with the detected variant.
    """
    if is_pretrained_source(path):
        try:
            return load_pretrained(path)
        except HubFilesError as err:
            raise CheckpointError(str(err)) from err
    obj = load_checkpoint(path)
    if obj.get("format") == FORMAT or ("model" in obj and "config" in obj):
        try:
            cfg = config_from_dict(obj["config"])
        except ConfigError as err:
            raise CheckpointError(f"checkpoint {path} has an invalid config: {err}") from err
        cfg.model.pretrained = ""  # the weights come from the checkpoint
        try:
            model = build_model_with_weights(cfg.model, obj["model"])
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint {path} does not fit its own config: {err}") from err
        return model.eval(), cfg
    try:
        sd = unwrap_state_dict(obj)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if not is_official_state_dict(sd):
        raise CheckpointError(f"{path} is neither a PDFNet checkpoint of this project nor an official PDFNet "
                              "state dict")
    model = load_official(sd, copy_tensors=False)
    return model, official_config(model)


def official_config(model: PDFNet) -> Config:
    """The config of a model loaded from an official checkpoint: the defaults with its variant and depth head."""
    cfg = Config()
    cfg.model.variant = model.variant
    cfg.model.depth_head = model.has_depth_head
    return cfg
