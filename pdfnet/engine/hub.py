"""PDFNet on the Hugging Face Hub: ``model.safetensors`` + ``config.json`` (the run's whole config) + a model card.

``PDFNet`` carries ``huggingface_hub.PyTorchModelHubMixin`` (``save_pretrained`` / ``push_to_hub`` /
``from_pretrained``, the reference model); this module, next to the ``.pth`` checkpoint handling, loads a folder in
the implementation ``model.impl`` picks for a device, and writes folders with the run's config and a model card:

    model, cfg = load_pretrained("owner/pdfnet-dis5k")          # or a local folder; offline-safe
    save_pretrained(model, cfg, "hub/pdfnet-dis5k", metrics="te.json")
    push_to_hub(model, cfg, "owner/pdfnet-dis5k", metrics="te.json")

``config.json`` holds the resolved :class:`~pdfnet.config.Config` as a plain dict (architecture, variant, input size,
evaluation settings), so a folder or hub id is everything ``load_model`` needs. A folder written by a bare
``PDFNet(...).save_pretrained(dir)`` stores the constructor arguments instead; it loads with default data/eval
settings.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..build import build_model
from ..card import model_card
from ..config import Config
from ..data.io import usual_permissions
from ..hub_files import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    HubFilesError,
    hub_config,
    looks_like_hub_id,
    read_pretrained,
)
from ..models import PDFNet


def attach_config(model: PDFNet, cfg: Config) -> PDFNet:
    """Let ``model.save_pretrained`` / ``push_to_hub`` write ``cfg`` (not just the constructor arguments)."""
    model._hub_mixin_config = hub_config(cfg)
    return model


def is_pretrained_source(source: str | os.PathLike) -> bool:
    """A ``save_pretrained`` folder or something that can only be a hub id (not a ``.pth``-like file path)."""
    text = os.path.expanduser(str(source))
    return Path(text).is_dir() or (looks_like_hub_id(text) and Path(text).suffix == "")


def load_pretrained(source: str | os.PathLike, device: str | torch.device = "cpu", revision: str | None = None,
                    flag: str = "--ckpt") -> tuple[PDFNet, Config]:
    """A local ``save_pretrained`` folder or a hub id -> (model in eval mode on ``device``, in the implementation
    ``model.impl`` picks there; its config). Weights load strictly (every key present, every shape right); offline,
    only the local cache is used and a miss is one line saying what to download
    (:class:`~pdfnet.hub_files.HubFilesError`)."""
    cfg, state = read_pretrained(source, revision=revision, flag=flag)
    try:
        model = build_model(cfg, device, state)
    except RuntimeError as err:
        raise HubFilesError(f"{source}: {WEIGHTS_NAME} does not fit {CONFIG_NAME}: {err}") from err
    return model.eval(), cfg


def save_pretrained(model: torch.nn.Module, cfg: Config, directory: str | os.PathLike,
                    metrics: str | os.PathLike | dict | None = None, license: str = "mit",
                    source: str | None = None, repo_id: str | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``directory``.

    The files are written in a temporary sibling folder and renamed into place one by one, so a crash never leaves
    a half-written weight file. ``model`` may be wrapped (DDP, ``torch.compile``).
    """
    model = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    attach_config(model, cfg)
    card_kwargs = {"metrics": metrics, "license": license, "source": source, "repo_id": repo_id}
    with tempfile.TemporaryDirectory(prefix=f".{directory.name}.", dir=directory.parent) as tmp:
        model.save_pretrained(tmp, model_card_kwargs=card_kwargs)
        for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
            usual_permissions(Path(tmp) / name)  # safetensors writes 0600, the other files 0644
            os.replace(Path(tmp) / name, directory / name)
    return directory


def push_to_hub(model: torch.nn.Module, cfg: Config, repo_id: str, metrics: str | os.PathLike | dict | None = None,
                private: bool | None = None, license: str = "mit", source: str | None = None) -> str:
    """Publish to ``repo_id`` (created when missing) in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, cfg, tmp, metrics=metrics, license=license, source=source, repo_id=repo_id)
        api = HfApi()
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        return str(api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message="Upload PDFNet weights, config and model card"))


__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "attach_config", "hub_config", "is_pretrained_source",
           "load_pretrained", "model_card", "push_to_hub", "save_pretrained"]
