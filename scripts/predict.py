#!/usr/bin/env python
"""Predict DIS masks for your own images (a file or a folder), at each image's own size.

  python scripts/predict.py --ckpt pdfnet_best_ours.pth --input photos/ --output masks/ --depth_model large
  python scripts/predict.py --ckpt PDFNet_Best.pth --input img.jpg --output out/ --depth_dir depth/ --format rgba

Depth comes from --depth_dir (cached maps named like the images, 8- or 16-bit, e.g. from prepare_depth.py) or is
computed with Depth Anything V2 (--depth_model: folder, hub id, or small/base/large). Outputs keep the input's file
stem: ``mask`` an 8-bit PNG, ``rgba`` the image cut out with the mask as alpha, ``overlay`` the mask tinted over the
image. Each file is written atomically; a file that fails is reported by name, the others continue, and the exit
status is 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pdfnet.cli import print_failures
from pdfnet.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    list_images,
    probs_to_u8,
    read_depth,
    read_rgb_u8,
    write_png,
)


def render(image_rgb: np.ndarray, mask_u8: np.ndarray, fmt: str) -> np.ndarray:
    """The output array for a format: mask [H,W], rgba [H,W,4], or overlay [H,W,3]."""
    if fmt == "mask":
        return mask_u8
    if fmt == "rgba":
        return np.dstack([image_rgb, mask_u8])
    alpha = (mask_u8.astype(np.float32) / 255.0)[..., None]
    tint = np.array([255, 40, 40], np.float32)
    return (image_rgb * (1 - 0.6 * alpha) + tint * 0.6 * alpha).clip(0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="our checkpoint or an official one")
    p.add_argument("--input", type=Path, required=True, help="an image or a folder of images")
    p.add_argument("--output", type=Path, required=True, help="output folder")
    depth = p.add_mutually_exclusive_group(required=True)
    depth.add_argument("--depth_dir", type=Path, help="cached depth maps, one per image stem")
    depth.add_argument("--depth_model", help="Depth Anything V2 folder, hub id, or small/base/large")
    p.add_argument("--size", type=int, default=None, help="model input size (default: the checkpoint config's)")
    p.add_argument("--tta", action="store_true", help="flip x scales {0.75, 1, 1.25}, averaged logits")
    p.add_argument("--format", choices=("mask", "rgba", "overlay"), default="mask")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

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
    depth_maps = {}
    if args.depth_dir:
        try:
            depth_maps = list_images(args.depth_dir)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    from pdfnet.engine.inference import load_model, predict_probs

    try:
        model, cfg = load_model(args.ckpt, args.device)
    except (RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    estimator = None
    if args.depth_model:
        from pdfnet.depth import DepthEstimator

        estimator = DepthEstimator(args.depth_model, device=str(next(model.parameters()).device))
    size = args.size or cfg.data.size
    failures = []
    for name, path in tqdm(inputs, desc="predicting", unit="img"):
        try:
            image = read_rgb_u8(path)
            if estimator is not None:
                depth = estimator([image])[0]
            elif name in depth_maps:
                depth = read_depth(depth_maps[name])
            else:
                raise ImageReadError(f"no depth map for {name!r} in {args.depth_dir}")
            if depth.shape != image.shape[:2]:
                raise ImageReadError(f"depth map for {name!r} is {depth.shape[1]}x{depth.shape[0]}, the image "
                                     f"{image.shape[1]}x{image.shape[0]}")
            mask = probs_to_u8(predict_probs(model, image, depth, size, args.tta))
            write_png(args.output / f"{name}.png", render(image, mask, args.format))
        except ImageReadError as err:
            failures.append(f"{name}: {err}")
    if failures:
        print_failures(failures, f"{len(failures)} of {len(inputs)} image(s) failed:")
        return 1
    print(f"wrote {len(inputs)} {args.format} PNG(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
