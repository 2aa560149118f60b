"""The training/validation dataset: resized (optionally cached) samples, joint augmentation, normalisation."""

from __future__ import annotations

import functools
import hashlib
import json
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
    target size: one file per sample holding exactly what the loader can need (the image, the mask as packed bits,
    every depth map a sample can draw, the depth target), whose arrays are read one by one, so an item reads only
    the depth map it draws. A file is a small JSON header (name -> dtype, shape, offset) followed by the raw arrays:
    no archive and no checksum to compute on every read. Entries are written atomically, so the data-loader workers
    of every rank can share one folder and a killed run leaves no partial entry; a damaged one is recomputed."""

    MAGIC = b"PDFNETC3"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, sample: Sample, size: int) -> str:
        parts = [str(size), "v3"]
        for path in (sample.image, sample.mask, sample.depth, *sample.depth_choices, sample.depth_target):
            if path is not None:
                st = Path(path).stat()
                parts.append(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()

    def read(self, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """The arrays ``names`` of an entry (None when it is missing or damaged)."""
        path = self.root / f"{key}.bin"
        try:
            with open(path, "rb") as f:
                if f.read(len(self.MAGIC)) != self.MAGIC:
                    return None
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
                start = f.tell()
                out = {}
                for name in names:
                    dtype, shape, offset = header[name]
                    array = np.empty(shape, dtype)
                    f.seek(start + offset)
                    if f.readinto(memoryview(array).cast("B")) != array.nbytes:
                        return None
                    out[name] = array
                return out
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        header, offset = {}, 0
        for name, array in arrays.items():
            header[name] = (array.dtype.str, list(array.shape), offset)
            offset += array.nbytes
        head = json.dumps(header).encode("utf-8")
        parts = [self.MAGIC, len(head).to_bytes(8, "little"), head]
        parts += [np.ascontiguousarray(a).tobytes() for a in arrays.values()]
        atomic_write_bytes(self.root / f"{key}.bin", b"".join(parts))


def _resized_depth(path: Path, size: int) -> np.ndarray:
    depth = cv2.resize(read_depth(path), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(depth * 65535), 0, 65535).astype(np.uint16)


def _depth_files(sample: Sample) -> dict[str, Path]:
    """{array name: file} of the depth maps a sample can need: each choice (or the one map), and the target."""
    files = {f"depth_choice{i}": path for i, path in enumerate(sample.depth_choices)}
    if not files and sample.depth is not None:
        files["depth"] = sample.depth
    if sample.depth_target is not None:
        files["depth_target"] = sample.depth_target
    return files


def load_resized(sample: Sample, size: int, depth_names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Decode and resize one sample: image uint8 [S,S,3] (bilinear), mask uint8 [S,S] (nearest, as the official
    loader), the depth maps of :func:`_depth_files` uint16 [S,S] (bilinear; only ``depth_names`` of them when given,
    so that a sample decodes just the map it draws), and the original [H,W] as ``orig_size``."""
    image = read_rgb_u8(sample.image)
    out = {"image": cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR),
           "orig_size": np.array(image.shape[:2], np.int64)}
    if sample.mask is not None:
        out["mask"] = cv2.resize(read_gray_u8(sample.mask), (size, size), interpolation=cv2.INTER_NEAREST)
    for name, path in _depth_files(sample).items():
        if depth_names is None or name in depth_names:
            out[name] = _resized_depth(path, size)
    return out


def _pack_mask(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask > 128, axis=None)


def _unpack_mask(packed: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(packed, count=size * size).reshape(size, size) * np.uint8(255)


class DISDataset(Dataset):
    """Items hold integer maps, so that loader workers hand 8 MB instead of 24 MB per 1024² sample through shared
    memory; :func:`batch_to_device` turns a batch into the model's float inputs on the device:

    ``image`` uint8 [3,S,S], ``depth`` uint16 [1,S,S] (depth x 65535), ``mask`` uint8 [1,S,S] (0/255 before
    augmentation), ``depth_target`` uint16 [1,S,S] (the depth losses' target: the sample's target map, else its input
    depth), ``name``, ``orig_size`` [2]. Augmentation works on these integer maps (:class:`JointAugment`).

    Every random choice (the input depth among ``depth_choices``, the augmentation) comes from a generator seeded by
    (seed, epoch, index), so an item is the same in any worker process and after a resume; a sample decodes (or reads
    from the cache) only the depth map it draws. An index may be an ``(epoch, index)`` pair (what
    :class:`~pdfnet.engine.sampler.ResumableSampler` yields with ``with_epoch``): persistent workers keep their own
    copy of the dataset, so the epoch has to travel with the index."""

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

    def _arrays(self, sample: Sample, depth_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """image, mask, orig_size and the depth maps ``depth_names``, from the cache when there is one."""
        if self.cache is None:
            arrays = load_resized(sample, self.size, depth_names)
            if "mask" in arrays:
                arrays["mask"] = np.where(arrays["mask"] > 128, 255, 0).astype(np.uint8)
            return arrays
        key = self.cache.key(sample, self.size)
        names = ("image", "orig_size") + (("mask",) if sample.mask is not None else ()) + depth_names
        arrays = self.cache.read(key, names)
        if arrays is None:
            full = load_resized(sample, self.size)
            if "mask" in full:
                full["mask"] = _pack_mask(full["mask"])
            self.cache.store(key, full)
            arrays = {name: full[name] for name in names}
        if "mask" in arrays:
            arrays["mask"] = _unpack_mask(arrays["mask"], self.size)
        return arrays

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        depth_names = tuple(name for name in _depth_files(sample) if not name.startswith("depth_choice"))
        if sample.depth_choices:
            # Uniform choice, as the official loader's random() thresholds at 1/3 and 2/3.
            pick = int(np.random.default_rng([self.seed, epoch, index, 1]).integers(len(sample.depth_choices)))
            depth_names = (f"depth_choice{pick}",) + depth_names
        arrays = self._arrays(sample, depth_names)
        maps = {"image": arrays["image"]}
        if sample.depth_choices:
            maps["depth"] = arrays[depth_names[0]]
        elif "depth" in arrays:
            maps["depth"] = arrays["depth"]
        if "depth" in maps and "depth_target" in arrays:
            maps["depth_target"] = arrays["depth_target"]
        if "mask" in arrays:
            maps["mask"] = arrays["mask"]
        if self.augment is not None:
            maps = self.augment(maps, np.random.default_rng([self.seed, epoch, index]))
        item = {"image": torch.from_numpy(np.ascontiguousarray(maps["image"])).permute(2, 0, 1).contiguous()}
        for name in ("depth", "depth_target", "mask"):
            if name in maps:
                item[name] = torch.from_numpy(np.ascontiguousarray(maps[name]))[None]
        if "depth" in item and "depth_target" not in item:
            item["depth_target"] = item["depth"]
        item["name"] = sample.name
        item["orig_size"] = torch.from_numpy(arrays["orig_size"])
        return item


_LEVELS = {"image": 255, "mask": 255, "depth": 65535, "depth_target": 65535}


@functools.lru_cache(maxsize=8)
def imagenet_normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std [3,1,1] on ``device``, made once per device (no host copy per batch)."""
    return IMAGENET_MEAN.to(device), IMAGENET_STD.to(device)


def batch_to_device(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch of :class:`DISDataset` items -> float model inputs on ``device``: ``image`` [B,3,S,S]
    ImageNet-normalised, ``depth`` and ``depth_target`` [B,1,S,S] in [0,1], ``mask`` [B,1,S,S] in [0,1]. The
    integer maps travel to the device (pinned memory makes that asynchronous) and are converted there."""
    out = {}
    for key, levels in _LEVELS.items():
        if key in batch:
            out[key] = batch[key].to(device, non_blocking=True).float().div_(levels)
    if "image" in out:
        mean, std = imagenet_normalisation(torch.device(device))
        out["image"] = out["image"].sub_(mean).div_(std)
    return out
