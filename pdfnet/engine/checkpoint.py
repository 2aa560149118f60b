"""Checkpoints: atomic writes, safe (``weights_only``) reads, and models rebuilt from either our or official files.

Our checkpoint format is a dict with at least ``model`` (state dict), ``config`` (the resolved config as a plain dict)
and ``epoch``; training adds optimizer/scheduler/scaler/EMA/RNG state.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..build import build_model
from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..data.io import atomic_write
from ..hub_files import HubFilesError, WeightsFileError, checked_weights, load_torch_file, read_pretrained
from ..models import PDFNet
from ..models.official import (
    OfficialCheckpointError,
    is_official_state_dict,
    load_official,
    official_model_config,
    unwrap_state_dict,
)
from .hub import is_pretrained_source

FORMAT = "pdfnet-checkpoint-v1"


class CheckpointError(WeightsFileError):
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
    try:
        obj = load_torch_file(path, "checkpoint")
    except WeightsFileError as err:
        raise CheckpointError(str(err)) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def is_own_checkpoint(obj: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is one of this project's (weights with their config), not an official one."""
    return obj.get("format") == FORMAT or ("model" in obj and "config" in obj)


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                          impl: str | None = None) -> tuple[PDFNet, Config]:
    """Build the model stored in ``path`` on ``device`` (``model.impl``, or ``impl`` when given, decides the
    implementation there): our ``.pth``, an official state dict (converted on the fly), a ``save_pretrained`` folder
    or a Hugging Face Hub id; eval mode. Returns (model, config); for official files the config is the defaults with
    the detected variant. The model carries its config, so ``model.save_pretrained`` keeps it."""
    cfg, state, what = _read_model(path)
    if impl is not None:
        cfg.model.impl = impl
    try:
        return build_model(cfg, device, state).eval(), cfg
    except RuntimeError as err:
        raise CheckpointError(f"{what}: {err}") from err


def _read_model(path: str | os.PathLike) -> tuple[Config, dict[str, torch.Tensor], str]:
    """(config, weights, what to call the file in an error) of any checkpoint ``model_from_checkpoint`` takes."""
    if is_pretrained_source(path):
        try:
            cfg, state = read_pretrained(path)
        except HubFilesError as err:
            raise CheckpointError(str(err)) from err
        return cfg, state, f"{path}: model.safetensors does not fit config.json"
    obj = load_checkpoint(path)
    if is_own_checkpoint(obj):
        try:
            cfg = config_from_dict(obj["config"])
        except ConfigError as err:
            raise CheckpointError(f"checkpoint {path} has an invalid config: {err}") from err
        cfg.model.pretrained = ""  # the weights come from the checkpoint
        if not isinstance(obj["model"], dict):
            raise CheckpointError(f"checkpoint {path}: 'model' holds a {type(obj['model']).__name__}, expected a "
                                  "state dict")
        return cfg, _checked(obj["model"], path), f"checkpoint {path} does not fit its own config"
    try:
        sd = unwrap_state_dict(obj)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if not is_official_state_dict(sd):
        raise CheckpointError(f"{path} is neither a PDFNet checkpoint of this project nor an official PDFNet "
                              "state dict")
    sd = _checked(sd, path)
    try:
        reference = load_official(sd, copy_tensors=False)  # strict, with the official key names in its errors
    except OfficialCheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return official_config(reference), reference.state_dict(), str(path)


def _checked(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    try:
        return checked_weights(state, f"checkpoint {path}")
    except ValueError as err:
        raise CheckpointError(str(err)) from err


def official_config(model: PDFNet) -> Config:
    """The config of a model loaded from an official checkpoint: the defaults with its variant and depth head."""
    cfg = Config()
    cfg.model = official_model_config(model.variant, model.has_depth_head)
    return cfg
