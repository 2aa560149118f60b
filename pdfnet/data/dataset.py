"""The training/validation dataset: resized (optionally cached) samples, joint augmentation, normalisation."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import AugmentConfig
from .datasets import Sample
from .io import atomic_write_bytes, read_depth, read_gray_u8, read_rgb_u8
from .transforms import JointAugment

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class ResizedSampleCache:
    """On-disk cache of samples resized to one size, keyed by source files (path, size in bytes, mtime) and the
    target size. Entries are written atomically, so concurrent data-loader workers can share a folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, sample: Sample, size: int) -> str:
        parts = [str(size)]
        for path in (sample.image, sample.mask, sample.depth, *sample.depth_choices, sample.depth_target):
            if path is not None:
                st = Path(path).stat()
                parts.append(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.root / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is recomputed

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.root / f"{key}.npz", buf.getvalue())


def _resized_depth(path: Path, size: int) -> np.ndarray:
    depth = cv2.resize(read_depth(path), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(depth * 65535), 0, 65535).astype(np.uint16)


def load_resized(sample: Sample, size: int) -> dict[str, np.ndarray]:
    """Decode and resize one sample: image uint8 [S,S,3] (bilinear), mask uint8 [S,S] (nearest, as the official
    loader), depth uint16 [S,S] (bilinear; ``depth_choice{i}`` for each of ``sample.depth_choices`` and
    ``depth_target`` when the sample has them), and the original [H,W]."""
    image = read_rgb_u8(sample.image)
    out = {"image": cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR),
           "orig_size": np.array(image.shape[:2], np.int64)}
    if sample.mask is not None:
        out["mask"] = cv2.resize(read_gray_u8(sample.mask), (size, size), interpolation=cv2.INTER_NEAREST)
    if sample.depth is not None and not sample.depth_choices:
        out["depth"] = _resized_depth(sample.depth, size)
    for i, path in enumerate(sample.depth_choices):
        out[f"depth_choice{i}"] = _resized_depth(path, size)
    if sample.depth_target is not None:
        out["depth_target"] = _resized_depth(sample.depth_target, size)
    return out


def _quantize(x: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """[0,1] float map -> integer map with ``levels`` steps (round to nearest)."""
    return x.mul(levels).round_().clamp_(0, levels).to(dtype)


class DISDataset(Dataset):
    """Items hold integer maps, so that loader workers hand 8 MB instead of 24 MB per 1024² sample through shared
    memory; :func:`batch_to_device` turns a batch into the model's float inputs on the device:

    ``image`` uint8 [3,S,S], ``depth`` uint16 [1,S,S] (depth x 65535), ``mask`` uint8 [1,S,S] (mask x 255: 0/255
    before augmentation), ``depth_target`` uint16 [1,S,S] (the depth losses' target: the sample's target map, else
    its input depth), ``name``, ``orig_size`` [2]. Augmented maps are computed in float and rounded back to their
    8/16-bit grid (the official loader also augments 8-bit PIL images); without augmentation nothing is rounded.

    Every random choice (the input depth among ``depth_choices``, the augmentation) comes from a generator seeded by
    (seed, epoch, index), so an item is the same in any worker process and after a resume. An index may be an
    ``(epoch, index)`` pair (what :class:`~pdfnet.engine.sampler.ResumableSampler` yields with ``with_epoch``):
    persistent workers keep their own copy of the dataset, so the epoch has to travel with the index."""

    def __init__(self, samples: list[Sample], size: int, augment: AugmentConfig | None = None,
                 cache_dir: str | Path | None = None, seed: int = 0) -> None:
        self.samples = samples
        self.size = size
        self.augment = JointAugment(augment) if augment is not None and augment.enabled else None
        self.cache = ResizedSampleCache(cache_dir) if cache_dir else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer indices."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _arrays(self, sample: Sample) -> dict[str, np.ndarray]:
        if self.cache is None:
            return load_resized(sample, self.size)
        key = self.cache.key(sample, self.size)
        arrays = self.cache.load(key)
        if arrays is None:
            arrays = load_resized(sample, self.size)
            self.cache.store(key, arrays)
        return arrays

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        arrays = self._arrays(sample)
        item = {"image": torch.from_numpy(arrays["image"]).permute(2, 0, 1).contiguous()}
        depth = arrays.get("depth")
        if sample.depth_choices:
            # Uniform choice, as the official loader's random() thresholds at 1/3 and 2/3.
            pick = int(np.random.default_rng([self.seed, epoch, index, 1]).integers(len(sample.depth_choices)))
            depth = arrays[f"depth_choice{pick}"]
        if depth is not None:
            item["depth"] = torch.from_numpy(depth)[None]
            if "depth_target" in arrays:
                item["depth_target"] = torch.from_numpy(arrays["depth_target"])[None]
        if "mask" in arrays:
            item["mask"] = torch.from_numpy(np.where(arrays["mask"] > 128, 255, 0).astype(np.uint8))[None]
        if self.augment is not None:
            floats = {k: v.float() / _LEVELS[k] for k, v in item.items()}
            floats = self.augment(floats, np.random.default_rng([self.seed, epoch, index]))
            item = {k: _quantize(v, _LEVELS[k], item[k].dtype) for k, v in floats.items()}
        if "depth" in item and "depth_target" not in item:
            item["depth_target"] = item["depth"]
        item["name"] = sample.name
        item["orig_size"] = torch.from_numpy(arrays["orig_size"])
        return item


_LEVELS = {"image": 255, "mask": 255, "depth": 65535, "depth_target": 65535}


def batch_to_device(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch of :class:`DISDataset` items -> float model inputs on ``device``: ``image`` [B,3,S,S]
    ImageNet-normalised, ``depth`` and ``depth_target`` [B,1,S,S] in [0,1], ``mask`` [B,1,S,S] in [0,1]. The
    integer maps travel to the device (pinned memory makes that asynchronous) and are converted there."""
    out = {}
    for key, levels in _LEVELS.items():
        if key in batch:
            out[key] = batch[key].to(device, non_blocking=True).float().div_(levels)
    if "image" in out:
        out["image"] = out["image"].sub_(IMAGENET_MEAN.to(device)).div_(IMAGENET_STD.to(device))
    return out
