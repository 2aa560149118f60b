"""Pseudo-depth for a dataset with Depth Anything V2: <split>/<out_name>/<stem>.png, 16-bit, the image's own H x W.
``pdfnet depth`` = ``python scripts/prepare_depth.py``.

  pdfnet depth --data_root DIS5K --splits DIS-TR DIS-VD DIS-TE1 DIS-TE2 DIS-TE3 DIS-TE4
  pdfnet depth --data_root DIS5K --model_size base --out_name depth_base
  pdfnet depth --data_root my_data --splits train --model /models/Depth-Anything-V2-Large-hf

Offline, fetch the model once with `hf download depth-anything/Depth-Anything-V2-Large-hf --local-dir DIR` and pass
--model DIR (or keep it in the hub cache and set HF_HUB_OFFLINE=1).

Images are read from <split>/im (DIS-5K) or <split>/images (the official PDFNet layout). Maps that already exist
are skipped, so an interrupted run resumes (--overwrite recomputes). Each file is written atomically. A file that
fails is reported by name at the end (exit status 1) while the others are still written.

Mapping to the official preparation notebook: it saves 8-bit JPEG maps from ViT-B into a folder named depth_large;
here maps are lossless 16-bit PNG and the folder name is yours (--out_name, default 'depth'; e.g. depth_large for
--model_size large). Values: min-max normalised per image, 1 = nearest, as the notebook's before its 8-bit rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..data.io import (
    ImageReadError,
    list_images,
    read_rgb_u8,
    remove_stale_temp_files,
    writable_folder_problem,
    write_png,
)
from ..depth.ids import PRESETS
from .common import (
    add_device_argument,
    add_max_pixels_argument,
    apply_max_pixels,
    make_parser,
    positive_int,
    print_failures,
    run_batch,
)

PAPER_SIZES = tuple(PRESETS.values())  # small, base, large
DEFAULT_SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


def image_folder(split_dir: Path, image_dir: str | None) -> Path:
    if image_dir:
        return split_dir / image_dir
    for name in ("im", "images"):
        if (split_dir / name).is_dir():
            return split_dir / name
    raise FileNotFoundError(f"no image folder in {split_dir} (expected 'im' or 'images'; set --image_dir)")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = make_parser(__doc__, prog)
    p.add_argument("--data_root", type=Path, required=True,
                   help="dataset root holding the split folders (e.g. DIS5K with DIS-TR, DIS-VD, DIS-TE1..4)")
    p.add_argument("--splits", nargs="+", default=None, help="split folders (default: the DIS-5K splits present)")
    p.add_argument("--model", default=None, help="any depth generator: a name (v1-large, dpt-large, zoedepth, "
                   "depth-pro, ...), the hub id of a transformers depth model, or a folder (overrides --model_size)")
    p.add_argument("--model_size", choices=[*PAPER_SIZES, *PRESETS], default="large",
                   help="Depth Anything V2 size: small/base/large = the paper's PDFNet-S/B/L (S/B/L also work)")
    p.add_argument("--input_size", type=int, default=518,
                   help="short-side input size; the network input is rounded to multiples of 14 as Depth "
                        "Anything's infer_image does (the paper's depth-loss target uses 1024)")
    p.add_argument("--batch_size", type=positive_int, default=4,
                   help="images per forward (same-shape images batch together)")
    p.add_argument("--out_name", default="depth", help="output folder name inside each split")
    p.add_argument("--image_dir", default=None, help="image folder name inside each split (default: im or images)")
    p.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    add_device_argument(p)
    add_max_pixels_argument(p)
    args = p.parse_args(argv)
    apply_max_pixels(args)
    if args.input_size < 14:
        p.error(f"--input_size must be at least 14, got {args.input_size}")
    if not args.data_root.is_dir():
        print(f"error: data root not found: {args.data_root}", file=sys.stderr)
        return 2
    splits = args.splits or [s for s in DEFAULT_SPLITS if (args.data_root / s).is_dir()]
    if not splits:
        print(f"error: no DIS-5K split folders in {args.data_root}; name them with --splits", file=sys.stderr)
        return 2

    try:
        jobs = depth_jobs(args.data_root, splits, args.out_name, args.image_dir)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = [(src, dst) for src, dst in jobs if args.overwrite or not dst.exists()]

    from ..device import DeviceError
    from ..engine.distributed import DistributedSetupError, init_distributed, shutdown

    try:
        ctx, device = init_distributed(args.device)  # under torchrun: this rank's device and the process group
    except (DistributedSetupError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        flag = "--model" if args.model else "--model_size"
        return compute_maps(args, len(jobs), todo, len(splits), ctx, device, flag=flag, folder_flag="--model")
    finally:
        shutdown(ctx)


def depth_jobs(root: Path, splits: list[str], out_name: str, image_dir: str | None) -> list[tuple[Path, Path]]:
    """(image, map) pairs of every image of ``splits``, the maps at ``<split>/<out_name>/<stem>.png``. Each output
    folder is checked before any work (OSError naming it) and cleared of what interrupted writes left there."""
    jobs: list[tuple[Path, Path]] = []
    for split in splits:
        images = list_images(image_folder(root / split, image_dir))
        out_dir = root / split / out_name
        if problem := writable_folder_problem(out_dir):  # before any work, not one failure per image after it
            raise OSError(problem)
        remove_stale_temp_files(out_dir)
        jobs += [(path, out_dir / f"{stem}.png") for stem, path in images.items()]
    return jobs


def compute_maps(args: argparse.Namespace, n_jobs: int, todo: list[tuple[Path, Path]], n_splits: int, ctx,
                 device, flag: str, folder_flag: str | None) -> int:
    """Write the ``todo`` (image, map) pairs: this rank's share of the batches; returns the exit status (the same on
    every rank: 0, 1 when any image failed anywhere, 2 when the model cannot be loaded). ``flag`` names the option
    that chose the model in errors (``folder_flag`` the one that takes a downloaded folder)."""
    from ..depth.anything import DepthEstimator, depth_to_u16
    from ..engine.distributed import barrier, gather_objects, shard, share_failure

    # Batches of the one-process order, dealt to ranks whole: a batch's maps do not depend on the world size (the
    # floats of a batch differ from one image at a time by ~5e-7, enough to flip 16-bit values).
    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    mine = shard(batches, ctx)
    barrier(ctx)  # every rank has listed what exists before any rank writes
    if ctx.is_main:
        print(f"{n_jobs} images in {n_splits} split(s); {n_jobs - len(todo)} maps already exist, {len(todo)} to "
              "compute" + (f" on {ctx.world_size} processes" if ctx.world_size > 1 else ""))
    if not todo:
        return 0
    estimator, error = None, None
    try:
        estimator = DepthEstimator(args.model or args.model_size, device=device, input_size=args.input_size,
                                   flag=flag, folder_flag=folder_flag)
    except (RuntimeError, FileNotFoundError) as err:
        error = err
    try:
        share_failure(ctx, error)
    except (RuntimeError, FileNotFoundError) as err:
        if ctx.is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    failures: list[str] = []
    done = 0
    with tqdm(total=sum(map(len, mine)), desc="depth", unit="img", disable=not ctx.is_main) as bar:
        for batch in mine:
            sources, images = [], []
            for src, dst in batch:
                try:
                    images.append(read_rgb_u8(src))
                    sources.append((src, dst))
                except ImageReadError as err:
                    failures.append(str(err))
                    bar.update()
            results = run_batch(estimator, images, [str(src) for src, _ in sources]) if images else []
            for (src, dst), (_, depth, error) in zip(sources, results):
                bar.update()
                if error is not None:
                    failures.append(f"{src}: {error}")
                    continue
                try:
                    write_png(dst, depth_to_u16(depth))
                except OSError as err:
                    failures.append(str(err))
                    continue
                done += 1
    parts = gather_objects(ctx, (done, failures))
    failures = [line for _, lines in parts for line in lines]
    if failures:
        if ctx.is_main:
            print_failures(failures, f"{len(failures)} image(s) failed (the other maps were written):")
        return 1
    if ctx.is_main:
        print(f"wrote {sum(n for n, _ in parts)} depth maps")
    return 0
