"""Random-number-generator state of a process, as plain tensors and tuples that load with ``weights_only=True``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU and, when ``device`` is a CUDA device, that device's generator state.

    Only this process's own GPU is saved: a run resumed with fewer GPUs, other ``CUDA_VISIBLE_DEVICES`` or
    another LOCAL_RANK layout restores each rank's state onto whatever device the rank has then."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng`; the CUDA state (if saved) goes to ``device`` when that is a CUDA device."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible GPU
        if not cuda:
            return
        cuda = cuda[min(device.index or 0, len(cuda) - 1)]
    torch.cuda.set_rng_state(cuda, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker's generators follow from torch's per-worker seed, which the
    loader derives from its own seeded generator (so a worker's state is reproducible and needs no saving)."""
    import cv2

    cv2.setNumThreads(0)  # one OpenCV thread per worker: workers x cores threads would oversubscribe the CPU
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
