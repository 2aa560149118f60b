"""Dataset layouts: discovery of image/mask/depth triplets, validated up front with every problem reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .io import list_images

DIS_SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


class DatasetError(ValueError):
    """A split that cannot be used; the message lists every problem with file names."""


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path | None
    depth: Path | None


def discover_split(root: str | Path, split: str, image_dir: str = "im", mask_dir: str = "gt",
                   depth_dir: str = "depth", need_masks: bool = True, need_depth: bool = True) -> list[Sample]:
    """Samples of ``<root>/<split>/{image_dir,mask_dir,depth_dir}`` matched by file stem, sorted by name.

    Raises :class:`DatasetError` listing all missing folders/files at once (no silent skipping).
    """
    base = Path(root) / split
    problems: list[str] = []
    if not base.is_dir():
        raise DatasetError(f"split folder not found: {base}")
    folders = {"images": base / image_dir}
    if need_masks:
        folders["masks"] = base / mask_dir
    if need_depth:
        folders["depth"] = base / depth_dir
    listed = {}
    for kind, folder in folders.items():
        if not folder.is_dir():
            hint = " (make it with scripts/prepare_depth.py)" if kind == "depth" else ""
            problems.append(f"missing {kind} folder {folder}{hint}")
            continue
        try:
            listed[kind] = list_images(folder)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise DatasetError(f"split {split} under {root}:\n  " + "\n  ".join(problems))
    images = listed["images"]
    if not images:
        raise DatasetError(f"split {split}: no images in {folders['images']}")
    for kind in ("masks", "depth"):
        if kind in listed:
            missing = sorted(set(images) - set(listed[kind]))
            problems += [f"no {kind[:-1] if kind == 'masks' else kind} file for image {name!r} in "
                         f"{folders[kind]}" for name in missing]
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise DatasetError(f"split {split} under {root} has {len(problems)} problem(s):\n  " + "\n  ".join(shown))
    return [Sample(name, path, listed.get("masks", {}).get(name), listed.get("depth", {}).get(name))
            for name, path in images.items()]
