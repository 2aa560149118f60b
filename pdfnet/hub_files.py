"""Resolve "a local folder or a Hugging Face Hub id" to a local folder, offline-safe.

Used for PDFNet weights (``engine/hub.py``) and Depth Anything (``depth/anything.py``). Offline (``HF_HUB_OFFLINE=1``
or no network) only the local cache is consulted, so a missing model fails at once with one line naming the id, the
flag that chose it and the ``hf download`` command that fetches it, instead of a chain of retries.
"""

from __future__ import annotations

import os
from pathlib import Path


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
                       allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """The local folder holding ``required`` files for ``source`` (a folder, or a hub id fetched into the cache).

    Args:
        source: a local folder, or ``owner/name`` on the Hugging Face Hub.
        required: files that must be in the folder (e.g. ``("config.json", "model.safetensors")``).
        what: what the model is, for messages ("PDFNet weights", "the Depth Anything model").
        flag: the option that chose ``source``, for messages ("--ckpt", "--depth_model").
        allow_patterns: files to fetch from the hub (default: ``required``).
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

    download = f"`hf download {text} --local-dir DIR` on a machine with network, then pass {flag} DIR"
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
