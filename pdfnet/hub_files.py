"""Resolve "a local folder or a Hugging Face Hub id" to a local folder, offline-safe.

Used for PDFNet weights (``engine/hub.py``) and Depth Anything (``depth/anything.py``). Offline (``HF_HUB_OFFLINE=1``
or no network) only the local cache is consulted, so a missing model fails at once with one line naming the id, the
flag that chose it and the ``hf download`` command that fetches it, instead of a chain of retries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, config_from_dict, config_to_dict

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


class HubFilesError(RuntimeError):
    """A model folder or hub id that cannot be resolved locally; the message says what to download."""


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE``, read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` with no further separators and nothing on disk under that name."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists() and not source.startswith((".", "~"))


def local_model_folder(source: str | os.PathLike, *, required: tuple[str, ...], what: str, flag: str,
                       allow_patterns: list[str] | None = None, revision: str | None = None,
                       folder_flag: str | None = None, alternative: str = "") -> Path:
    """The local folder holding ``required`` files for ``source`` (a folder, or a hub id fetched into the cache).

    Args:
        source: a local folder, or ``owner/name`` on the Hugging Face Hub.
        required: files that must be in the folder (e.g. ``("config.json", "model.safetensors")``).
        what: what the model is, for messages ("PDFNet weights", "the Depth Anything model").
        flag: the option that chose ``source``, for messages ("--ckpt", "--depth_model").
        allow_patterns: files to fetch from the hub (default: ``required``).
        folder_flag: the option that takes a downloaded folder, when not ``flag`` (``pdfnet depth --model_size``
            chooses a hub id, ``--model`` takes the folder).
        alternative: another way round a failed download, added to its message ("or give ... with --depth_dir").
    """
    text = os.path.expanduser(str(source))
    folder = Path(text)
    if folder.exists():
        if not folder.is_dir():
            raise HubFilesError(f"{what}: {folder} is a file, expected a folder holding {', '.join(required)}")
        missing = [name for name in required if not (folder / name).is_file()]
        if missing:
            raise HubFilesError(f"{what}: folder {folder} has no {', '.join(missing)} ({flag} takes a folder "
                                f"written by save_pretrained, or a hub id)")
        return folder
    if not looks_like_hub_id(text):
        raise HubFilesError(f"{what}: {text} does not exist (and is not a hub id of the form owner/name); check "
                            f"{flag}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    download = (f"`hf download {text} --local-dir DIR` on a machine with network, then pass {folder_flag or flag} DIR"
                + (f"; {alternative}" if alternative else ""))
    try:
        path = Path(snapshot_download(text, revision=revision, allow_patterns=allow_patterns or list(required),
                                      local_files_only=hub_offline()))
    except LocalEntryNotFoundError as err:
        why = "offline (HF_HUB_OFFLINE is set)" if hub_offline() else "the hub cannot be reached"
        raise HubFilesError(f"{what} {text!r} ({flag}): no local folder of that name, not in the hub cache, and "
                            f"{why}; run {download}") from err
    except HfHubHTTPError as err:  # repository not found, gated, private, revision unknown...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HubFilesError(f"{what} {text!r} ({flag}) could not be downloaded: {first}") from err
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise HubFilesError(f"{what} {text!r} ({flag}) has no {', '.join(missing)} on the hub or in the cache")
    return path


SWIN_B_22K_FILE = ("https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                   "swin_base_patch4_window12_384_22k.pth")  # what the official README downloads
SWIN_B_22K_HUB = "timm/swin_base_patch4_window12_384.ms_in22k"  # the same ImageNet-22k weights through timm


def pretrained_backbone_problem(source: str) -> str | None:
    """Why ``model.pretrained`` cannot be used before anything starts, or None: a file name that does not exist
    (a hub id is checked when it is loaded: it needs the network or the cache)."""
    if not source:
        return None
    path = Path(os.path.expanduser(source))
    if path.exists() or source.startswith(("timm/", "hf-hub:")):
        return None
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors") or os.sep in source:
        return (f"pretrained backbone file not found: model.pretrained={source!r}. The recipe's ImageNet-22k Swin-B: "
                f"download {SWIN_B_22K_FILE} to that path, or set model.pretrained={SWIN_B_22K_HUB} (timm, the same "
                "weights; needs the network once), or model.pretrained='' for a random init")
    return None


def hub_config(cfg: Config) -> dict[str, Any]:
    """What ``config.json`` holds: the resolved config, with the (local) pretrained-encoder path cleared."""
    tree = config_to_dict(cfg)
    tree["model"]["pretrained"] = ""
    return tree


def config_from_hub_json(raw: Any, source: str) -> Config:
    """A ``config.json`` -> Config: our whole config (``{"model": {...}, "data": {...}, ...}``), or what a bare
    ``PDFNet(...).save_pretrained`` records, its constructor arguments (keys of ``model:`` in the config)."""
    if not isinstance(raw, dict):
        raise HubFilesError(f"{source}: {CONFIG_NAME} holds a {type(raw).__name__}, expected an object")
    try:
        if isinstance(raw.get("model"), dict):
            return config_from_dict(raw)
        arguments = dict(raw)
        if arguments.pop("patch_grid", 8) != 8:
            raise ConfigError("patch_grid other than 8 is not configurable")
        return config_from_dict({"model": arguments})
    except ConfigError as err:
        raise HubFilesError(f"{source}: {CONFIG_NAME} is not a PDFNet config: {err}") from err


def read_pretrained(source: str | os.PathLike, revision: str | None = None,
                    flag: str = "--ckpt") -> tuple[Config, dict[str, Any]]:
    """A ``save_pretrained`` folder or a hub id -> (its config, its weights on the CPU); offline, only the local
    cache is used and a miss is one line saying what to download."""
    from safetensors.torch import load_file

    folder = local_model_folder(source, required=(CONFIG_NAME, WEIGHTS_NAME), what="PDFNet weights", flag=flag,
                                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME], revision=revision)
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HubFilesError(f"{source}: cannot read {folder / CONFIG_NAME}: {err}") from err
    cfg = config_from_hub_json(raw, str(source))
    cfg.model.pretrained = ""  # the weights come from the folder
    try:
        state = load_file(str(folder / WEIGHTS_NAME), device="cpu")
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise HubFilesError(f"{source}: cannot read {folder / WEIGHTS_NAME}: {err}") from err
    try:
        return cfg, checked_weights(state, f"{source}: {WEIGHTS_NAME}")
    except ValueError as err:
        raise HubFilesError(str(err)) from err


class WeightsFileError(RuntimeError):
    """A weights file that cannot be read safely; the message names it and says why."""


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors for missing, empty, truncated,
    foreign and object-carrying files (``what`` names the file's role in them)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"{what} {path} is empty (0 bytes): an interrupted download or copy?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err) and "Unsupported global" not in str(err):  # not a pickle of objects at all
            raise WeightsFileError(f"cannot read {what} {path}: the file is corrupt, truncated, or not a PyTorch "
                                   "checkpoint") from None
        # Not torch's advice ("weights_only=False will likely succeed"): never the thing to do with a stranger's file.
        raise WeightsFileError(f"cannot read {what} {path}: it holds Python objects other than tensors and plain "
                               "containers, and loading those could run code from the file, so it is not loaded. If "
                               "you made it yourself, re-save its state_dict (torch.save(model.state_dict(), ...))"
                               ) from None
    except Exception as err:  # truncated zip, not a torch file at all...
        first = next(iter(str(err).splitlines()), "")[:300]
        raise WeightsFileError(f"cannot read {what} {path}: {type(err).__name__}: {first} (the file is corrupt, "
                               "truncated, or not a PyTorch checkpoint)") from None


def checked_weights(state: dict[str, Any], what: str) -> dict[str, Any]:
    """Loaded weights, checked once: a NaN or infinite value is a ValueError naming the tensor (the model would
    write all-zero masks without a word); float64/float16/bfloat16 tensors are cast to float32 with a notice (the
    model computes in float32 and casts under autocast itself)."""
    import warnings

    import torch

    cast = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{what}: tensor {key!r} holds {bad:,} NaN or infinite value(s) of {value.numel():,}; "
                             "these weights come from a run that diverged or a damaged file")
        if value.dtype != torch.float32:
            cast.append(f"{key} ({str(value.dtype).removeprefix('torch.')})")
    if cast:
        warnings.warn(f"{what}: {len(cast)} tensor(s) stored in another precision, cast to float32: "
                      f"{', '.join(cast[:3])}{', ...' if len(cast) > 3 else ''}", stacklevel=2)
        state = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for k, v in state.items()}
    return state
