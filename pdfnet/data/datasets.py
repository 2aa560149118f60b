"""Dataset layouts: discovery of image/mask/depth triplets, validated up front with every problem reported at once."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..config import DataConfig
from .io import is_truncated, list_images, size_problem

DIS_SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


class DatasetError(ValueError):
    """A split that cannot be used; the message lists every problem with file names."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image with its files. ``depth`` is the input depth map; for training, ``depth_choices`` (when not empty)
    are maps the input depth is drawn from per sample and epoch, and ``depth_target`` the map the depth losses use
    (None: the input depth)."""

    name: str
    image: Path
    mask: Path | None
    depth: Path | None
    depth_choices: tuple[Path, ...] = ()
    depth_target: Path | None = None


DEPTH_HINT = "make it with `pdfnet depth` or scripts/prepare_depth.py"


def discover_split(root: str | Path, split: str, image_dir: str = "im", mask_dir: str = "gt",
                   depth_dir: str = "depth", need_masks: bool = True, need_depth: bool = True,
                   depth_hint: str = DEPTH_HINT) -> list[Sample]:
    """Samples of ``<root>/<split>/{image_dir,mask_dir,depth_dir}`` matched by file stem, sorted by name.

    Raises :class:`DatasetError` listing all missing folders/files at once (no silent skipping); ``depth_hint``
    says how to make a missing depth folder.
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
            hint = f" ({depth_hint})" if kind == "depth" else ""
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


def check_root(root: str | Path, how: str = "set data.root, e.g. --opt data.root=/path/to/DIS5K") -> Path:
    """``root`` as a Path; DatasetError saying ``how`` to set it (the command's own flag) when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist ({how})")
    return root


def _detect_layout(root: Path, split: str) -> str:
    check_root(root)
    if (root / split / "im").is_dir():
        return "dis5k"
    if (root / split / "images").is_dir():
        return "official"
    if (root / f"{split}.txt").is_file() or split.endswith(".txt"):
        return "list"
    raise DatasetError(f"cannot tell the layout of split {split!r} under {root}: expected {root / split}/im (DIS-5K), "
                       f"{root / split}/images (official PDFNet) or a list file {root / split}.txt")


def read_list_file(path: Path, need_masks: bool = True, need_depth: bool = True) -> list[Sample]:
    """A list file: one sample per line, tab-separated ``image<TAB>mask[<TAB>depth]``, paths relative to the file.
    Tabs (not spaces) separate fields because DIS names contain spaces. Blank lines and '#'-lines are skipped."""
    if not path.is_file():
        raise DatasetError(f"list file not found: {path}")
    samples, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        wanted = 1 + need_masks + need_depth
        if len(fields) < wanted:
            problems.append(f"{path}:{number}: expected {wanted} tab-separated paths, got {len(fields)}: {line!r}")
            continue
        paths = [(path.parent / f.strip()) if f.strip() else None for f in fields] + [None, None]
        image, mask, depth = paths[0], paths[1] if need_masks else None, paths[2] if len(fields) > 2 else None
        for p in (image, mask, depth if need_depth else None):
            if p is not None and not p.is_file():
                problems.append(f"{path}:{number}: file not found: {p}")
        samples.append(Sample(image.stem, image, mask, depth))
    if problems:
        raise DatasetError(f"list {path} has {len(problems)} problem(s):\n  " + "\n  ".join(problems[:50]))
    if not samples:
        raise DatasetError(f"list {path} names no samples")
    return samples


def discover(root: str | Path, split: str, layout: str = "auto", image_dir: str = "im", mask_dir: str = "gt",
             depth_dir: str = "depth", need_masks: bool = True, need_depth: bool = True,
             depth_hint: str = DEPTH_HINT) -> list[Sample]:
    """Samples of a split in any supported layout (see DataConfig.layout)."""
    root = Path(root)
    layout = _detect_layout(root, split) if layout == "auto" else layout
    if layout == "list":
        return read_list_file(Path(split) if split.endswith(".txt") else root / f"{split}.txt", need_masks,
                              need_depth)
    if layout == "official":
        depth = depth_dir if (root / split / depth_dir).is_dir() else "depth_large"
        return discover_split(root, split, "images", "masks", depth, need_masks, need_depth, depth_hint)
    return discover_split(root, split, image_dir, mask_dir, depth_dir, need_masks, need_depth, depth_hint)


def validate_samples(samples: list[Sample]) -> None:
    """Open every file's header and check its end: unreadable, truncated and oversized files and image/mask/depth
    size mismatches are all reported at once, before any work."""
    from PIL import Image, UnidentifiedImageError

    problems = []
    for s in samples:
        sizes = {}
        for kind, path in (("image", s.image), ("mask", s.mask), ("depth", s.depth)):
            if path is None:
                continue
            try:
                with Image.open(path) as im:
                    sizes[kind] = im.size
                if problem := size_problem(*sizes[kind]):
                    problems.append(f"{s.name}: {kind} {path}: {problem}")
                elif is_truncated(path):
                    problems.append(f"{s.name}: truncated {kind} {path} (an interrupted download or copy?)")
            except (OSError, UnidentifiedImageError) as err:
                problems.append(f"{s.name}: unreadable {kind} {path} ({type(err).__name__})")
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{k} {w}x{h}" for k, (w, h) in sizes.items())
            problems.append(f"{s.name}: size mismatch ({shown})")
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise DatasetError(f"{len(problems)} problem(s) in {len(samples)} samples:\n  " + "\n  ".join(shown))


def _split_folder(root: Path, split: str, layout: str) -> Path:
    layout = _detect_layout(root, split) if layout == "auto" else layout
    if layout == "list":
        return Path()
    return root / split


def training_samples(cfg: DataConfig) -> tuple[list[Sample], list[str]]:
    """Training samples with their depth sources, and notices for the user.

    ``cfg.depth_choices`` (the paper: depth_large, depth_base, depth_small) and ``cfg.depth_target_dir`` (the paper:
    depth_large_1024) name folders inside the split. When none of the choice folders exists but ``cfg.depth_dir``
    does, training uses that single map for input and target (a notice says so); a recipe that is only partly
    present is an error listing what is missing.
    """
    root = Path(cfg.root)
    split_dir = _split_folder(root, cfg.train_split, cfg.layout)
    if split_dir == Path() and (cfg.depth_choices or cfg.depth_target_dir):
        raise DatasetError("data.depth_choices / data.depth_target_dir need a folder layout (dis5k or official); "
                           "list files name one depth map per sample")
    choices = list(cfg.depth_choices)
    target_dir = cfg.depth_target_dir
    notices: list[str] = []
    wanted = choices + ([target_dir] if target_dir else [])
    present = [d for d in wanted if (split_dir / d).is_dir()]
    if wanted and not present and (split_dir / cfg.depth_dir).is_dir():
        notices.append(f"depth: none of {', '.join(wanted)} exists in {split_dir}; training with the single map "
                       f"folder '{cfg.depth_dir}' as input and as the depth-loss target (the paper's recipe needs "
                       "them: see 'Data and depth' in the README)")
        choices, target_dir = [], ""
    elif wanted and len(present) < len(wanted):
        missing = [str(split_dir / d) for d in wanted if d not in present]
        raise DatasetError("depth folders named by data.depth_choices / data.depth_target_dir are missing:\n  "
                           + "\n  ".join(missing) + "\nmake them with `pdfnet depth --out_name NAME` "
                           "(scripts/prepare_depth.py), or set data.depth_choices=[] data.depth_target_dir=''")
    first = choices[0] if choices else cfg.depth_dir
    samples = discover(root, cfg.train_split, cfg.layout, cfg.image_dir, cfg.mask_dir, first)
    extra = {}
    for folder in choices[1:] + ([target_dir] if target_dir else []):
        found = discover(root, cfg.train_split, cfg.layout, cfg.image_dir, cfg.mask_dir, folder)
        extra[folder] = {s.name: s.depth for s in found}
    out = []
    for s in samples:
        picks = (s.depth,) + tuple(extra[f][s.name] for f in choices[1:]) if len(choices) > 1 else ()
        target = extra[target_dir][s.name] if target_dir else None
        out.append(dataclasses.replace(s, depth_choices=picks, depth_target=target))
    return out, notices


def evaluation_depth_folder(cfg: DataConfig, split: str) -> str:
    """The depth folder evaluated with: the first of ``cfg.depth_choices`` when the split has it (the official
    validation reads depth_large), else ``cfg.depth_dir``."""
    split_dir = _split_folder(Path(cfg.root), split, cfg.layout)
    if cfg.depth_choices and split_dir != Path() and (split_dir / cfg.depth_choices[0]).is_dir():
        return cfg.depth_choices[0]
    return cfg.depth_dir


def validation_samples(cfg: DataConfig) -> list[Sample]:
    """Validation samples, with the depth folder of :func:`evaluation_depth_folder`."""
    return discover(cfg.root, cfg.val_split, cfg.layout, cfg.image_dir, cfg.mask_dir,
                    evaluation_depth_folder(cfg, cfg.val_split))


def cache_folder(cfg: DataConfig) -> Path | None:
    """The resized-sample cache folder of ``data.cache_dir`` (``auto``: ``<data.root>/.pdfnet_cache``; '': none),
    created and checked writable, so that a read-only location is one line before any work, not a crash in a
    data-loader worker."""
    if not cfg.cache_dir:
        return None
    folder = Path(cfg.root) / ".pdfnet_cache" if cfg.cache_dir == "auto" else Path(cfg.cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DatasetError(f"data.cache_dir: cannot write the sample cache in {folder} ({err.strerror or err}); "
                           "set data.cache_dir to a writable folder, or '' to train without a cache") from err
    return folder
