"""Predict DIS masks for your own images (a file or a folder), at each image's own size.
``pdfnet predict`` = ``python scripts/predict.py``.

  pdfnet predict --ckpt pdfnet_best_ours.pth --input photos/ --output masks/ --depth_model large
  pdfnet predict --ckpt owner/pdfnet-dis5k --input img.jpg --output out/ --depth_dir depth/ --format rgba
  pdfnet predict --ckpt best.pth --input big_photos/ --output masks/ --depth_model large --tile --half

Depth comes from --depth_dir (cached maps named like the images, 8- or 16-bit, e.g. from prepare_depth.py) or is
computed on the fly (--depth_model: Depth Anything V2 small/base/large = the paper's PDFNet-S/B/L, any transformers
depth model by name or hub id, or a folder; see docs/data-and-depth.md). Outputs keep the input's file
stem: ``mask`` an 8-bit PNG, ``rgba`` the image cut out with the mask as alpha (the foreground's colours estimated
in the soft edge, ``--foreground``; ``--background`` composites onto a colour or an image), ``overlay`` the mask
tinted over the image (``--file_type jpg|webp`` for overlays and composites: a sixth of the PNG's size). Each file
is written atomically; a file that fails is reported by name, the others continue, and the exit status is 1 at the
end.

--batch_size N runs N images per forward pass (N tiles with --tile) while worker processes read the next images;
--half runs under bf16 autocast; --tile adds full-resolution tiles to the global pass for images larger than --size.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.io import (
    FILE_TYPES,
    IMAGE_EXTENSIONS,
    ImageReadError,
    list_images,
    probs_to_u8,
    read_depth,
    read_rgb_u8,
    remove_stale_temp_files,
    writable_folder_problem,
    write_image,
)
from ..engine.cutout import FOREGROUND_METHODS, OUTPUT_FORMATS, read_background, render
from .common import (
    GENERATOR_HELP,
    add_checkpoint_argument,
    add_device_argument,
    add_max_pixels_argument,
    apply_max_pixels,
    checkpoint_problem,
    configure_inference_backends,
    make_parser,
    model_size,
    positive_int,
    print_failures,
    run_batch,
)

OFFLINE_DEPTH = "or pass your own depth maps with --depth_dir (one per image, named like it; 8- or 16-bit, 1 = near)"


class Photos:
    """(name, image uint8 [H,W,3] | None, cached depth float [H,W] | None, error | None) per input image; read in
    DataLoader workers so that decoding overlaps inference. Errors are returned, not raised: the run goes on."""

    def __init__(self, inputs: list[tuple[str, Path]], depth_dir: Path | None,
                 depth_maps: dict[str, Path] | None) -> None:
        self.inputs, self.depth_dir, self.depth_maps = inputs, depth_dir, depth_maps

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        name, path = self.inputs[index]
        try:
            image = read_rgb_u8(path)
            depth = None
            if self.depth_maps is not None:
                if name not in self.depth_maps:
                    raise ImageReadError(f"no depth map for {name!r} in {self.depth_dir}")
                depth = read_depth(self.depth_maps[name])
                if depth.shape != image.shape[:2]:
                    raise ImageReadError(f"depth map for {name!r} is {depth.shape[1]}x{depth.shape[0]}, the image "
                                         f"{image.shape[1]}x{image.shape[0]}")
            return name, image, depth, None
        except ImageReadError as err:
            return name, None, None, str(err)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = make_parser(__doc__, prog)
    add_checkpoint_argument(p)
    p.add_argument("--input", type=Path, required=True, help="an image or a folder of images")
    p.add_argument("--output", type=Path, required=True, help="output folder")
    depth = p.add_mutually_exclusive_group(required=True)
    depth.add_argument("--depth_dir", type=Path, help="cached depth maps, one per image stem")
    depth.add_argument("--depth_model", help=GENERATOR_HELP)
    p.add_argument("--size", type=model_size, default=None, help="model input size (default: the checkpoint config's)")
    p.add_argument("--tta", action="store_true", default=None, help="flip x scales {0.75, 1, 1.25}, averaged logits")
    p.add_argument("--batch_size", type=positive_int, default=None,
                   help="images per forward pass; tiles per pass with --tile (default: the config's eval.batch_size)")
    p.add_argument("--half", action="store_true", default=None, help="bf16 autocast (fp16 on GPUs without bf16)")
    p.add_argument("--tile", action="store_true", default=None,
                   help="images larger than --size: a global pass plus overlapping full-resolution tiles")
    p.add_argument("--tile_overlap", type=int, default=None,
                   help="minimum tile overlap in pixels (default: a quarter of --size, 256 at 1024)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="mask",
                   help="mask: 8-bit PNG; rgba: the image cut out (mask as alpha); overlay: mask tinted over the image")
    add_device_argument(p, inference=True)
    p.add_argument("--foreground", choices=FOREGROUND_METHODS, default="fast",
                   help="rgba: the colours in the soft edge; fast = estimated (no halo of the old background), none = "
                        "the photo's own")
    p.add_argument("--background", default=None, metavar="COLOR|IMAGE",
                   help="rgba: composite onto a colour (white, #RRGGBB, R,G,B) or an image (resized to each photo) "
                        "and write RGB")
    p.add_argument("--file_type", choices=FILE_TYPES, default="png",
                   help="overlay, or rgba with --background (pictures without transparency): jpg or webp files are "
                        "~6x smaller than png (quality 90); masks and transparent cut-outs are always png")
    p.add_argument("--workers", type=int, default=2, help="processes reading images ahead of the model")
    add_max_pixels_argument(p)
    args = p.parse_args(argv)
    apply_max_pixels(args)
    if args.file_type != "png" and not (args.format == "overlay" or (args.format == "rgba" and args.background)):
        print(f"error: --file_type {args.file_type} is for pictures without transparency: --format overlay, or "
              "--format rgba with --background (masks and transparent cut-outs are written as png)",
              file=sys.stderr)
        return 2
    background = None
    if args.background is not None:
        if args.format != "rgba":
            print("error: --background composites the cut-out: use it with --format rgba", file=sys.stderr)
            return 2
        try:
            background = read_background(args.background)
        except (ValueError, ImageReadError, FileNotFoundError) as err:
            print(f"error: --background {args.background!r}: not a colour and not a readable image ({err})",
                  file=sys.stderr)
            return 2
    if problem := checkpoint_problem(args.ckpt):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    if args.input.is_dir():
        try:
            inputs = list(list_images(args.input).items())
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.input.is_file() and args.input.suffix.lower() in IMAGE_EXTENSIONS:
        inputs = [(args.input.stem, args.input)]
    else:
        print(f"error: {args.input} is neither an image nor a folder", file=sys.stderr)
        return 2
    if not inputs:
        print(f"error: no images in {args.input}", file=sys.stderr)
        return 2
    if problem := writable_folder_problem(args.output):
        print(f"error: --output: {problem}", file=sys.stderr)
        return 2
    remove_stale_temp_files(args.output)
    depth_maps = None
    if args.depth_dir:
        try:
            depth_maps = list_images(args.depth_dir)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    from torch.utils.data import DataLoader

    from ..engine.inference import load_model, model_device
    from ..engine.predictor import Predictor
    from ..engine.validation import collate_as_is
    from ..workers import loader_worker_init

    try:
        model, cfg = load_model(args.ckpt, args.device)
        configure_inference_backends(args, model_device(model))
        predictor = Predictor.from_config(model, cfg, size=args.size, tta=args.tta, half=args.half,
                                          batch_size=args.batch_size, tile=args.tile, tile_overlap=args.tile_overlap)
        if predictor.tile and not 0 <= predictor.overlap < predictor.size:
            raise RuntimeError(f"--tile_overlap must be in [1, {predictor.size}) pixels, got {predictor.overlap}")
        estimator = None
        if args.depth_model:
            from ..depth import DepthEstimator

            estimator = DepthEstimator(args.depth_model, device=model_device(model), alternative=OFFLINE_DEPTH)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    failures: list[str] = []
    writes: list[tuple[str, Future]] = []
    loader = DataLoader(Photos(inputs, args.depth_dir, depth_maps), batch_size=None, num_workers=max(0, args.workers),
                        collate_fn=collate_as_is, worker_init_fn=loader_worker_init)
    per_pass = predictor.images_per_call

    def segment(pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        images = [image for image, _ in pairs]
        depths = estimator(images) if estimator is not None else [depth for _, depth in pairs]
        return predictor(images, depths)

    with ThreadPoolExecutor(max_workers=2) as writer, tqdm(total=len(inputs), desc="predicting", unit="img") as bar, \
            tqdm(desc="tiles", unit="tile", position=1, leave=False, disable=not predictor.tile) as tiles:
        def tile_progress(done: int, total: int) -> None:  # a 12 MP photo is ~50 tiles at 1024: minutes on a CPU
            if done == 0:
                tiles.reset(total=total)
            tiles.n = done
            tiles.refresh()

        predictor.tile_progress = tile_progress
        batch: list[tuple[str, np.ndarray, np.ndarray | None]] = []

        def flush() -> None:
            names, images, depths = zip(*batch)
            for (name, probs, error), image in zip(run_batch(segment, list(zip(images, depths)), list(names)), images):
                if error is not None:
                    failures.append(f"{name}: {error}")
                    continue
                out = render(image, probs_to_u8(probs), args.format, args.foreground, background)
                writes.append((name, writer.submit(write_image, args.output / f"{name}.{args.file_type}", out)))
            bar.update(len(batch))
            batch.clear()

        for name, image, depth_map, error in loader:
            if error is not None:
                failures.append(f"{name}: {error}")
                bar.update(1)
                continue
            batch.append((name, image, depth_map))
            if len(batch) == per_pass:
                flush()
        if batch:
            flush()
    for name, future in writes:
        if future.exception() is not None:
            failures.append(f"{name}: could not write the output: {future.exception()}")
    if failures:
        print_failures(failures, f"{len(failures)} of {len(inputs)} image(s) failed:")
        return 1
    print(f"wrote {len(inputs)} {args.format} {args.file_type.upper()}(s) to {args.output}")
    return 0
