#!/usr/bin/env python
"""Does tiled inference need depth normalised once per image? A measurement, not a test.

  python scripts/tile_depth_study.py --ckpt runs/quickstart/run/best.pth --scenes 8

The model min-max normalises the depth of every input, so in tiled mode each tile's depth crop is stretched to [0, 1]
on its own: neighbouring tiles see different depth scales, which can show as bands along tile borders. This script
predicts synthetic scenes at 3x the model size whose depth is what Depth Anything gives indoors and outdoors (a
smooth far-to-near ramp plus a nearer object), three ways: the plain path (whole image at the model size), tiles with
per-tile normalisation (what predict --tile does) and tiles with depth normalised once per image (the model's own
normalisation switched off for the run). It prints the MAE against the scene's mask and a seam measure: the mean
|vertical probability change| on the rows where tiles meet, divided by its mean over all rows (about 1: no seams).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def depth_normalised_by_caller():
    """The models' own per-input min-max normalisation off (the study's third way only)."""
    import pdfnet.lean.decoder as lean_decoder
    import pdfnet.models.pdfnet as reference

    saved = reference.normalize_depth, lean_decoder.normalize_depth
    reference.normalize_depth = lean_decoder.normalize_depth = lambda depth: depth
    try:
        yield
    finally:
        reference.normalize_depth, lean_decoder.normalize_depth = saved


def ramp_depth(mask: np.ndarray) -> np.ndarray:
    import cv2

    h, w = mask.shape
    ramp = np.repeat(np.linspace(0.1, 0.6, h, dtype=np.float32)[:, None], w, axis=1)  # far at the top, near below
    near = cv2.GaussianBlur((mask > 127).astype(np.float32), (0, 0), 6)
    return np.clip(ramp + 0.35 * near, 0, 1)


def seam_ratio(probs: np.ndarray, size: int, overlap: int) -> float:
    from pdfnet.engine.tiling import tile_starts

    starts = tile_starts(probs.shape[0], size, overlap)
    meets = [(starts[i] + size + starts[i + 1]) // 2 for i in range(len(starts) - 1)]
    change = np.abs(np.diff(probs, axis=0)).mean(1)
    return float(np.mean([change[m - 8:m + 8].mean() for m in meets]) / change.mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a trained checkpoint (e.g. the quickstart's best.pth)")
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--scale", type=int, default=3, help="scene side in model sizes")
    args = p.parse_args(argv)

    from pdfnet.data.synthetic import make_scene, scene_rng
    from pdfnet.engine.inference import load_model, predict_probs
    from pdfnet.engine.tiling import predict_probs_tiled

    model, cfg = load_model(args.ckpt, "cpu")
    size, overlap = cfg.data.size, cfg.data.size // 4
    ways = ("plain", "tiles, per-tile depth", "tiles, per-image depth")
    rows = {way: [] for way in ways}
    for i in range(args.scenes):
        scene = make_scene(args.scale * size, scene_rng(7, 1000 + i))
        depth, gt = ramp_depth(scene.mask), scene.mask > 127
        results = {ways[0]: predict_probs(model, scene.image, depth, size),
                   ways[1]: predict_probs_tiled(model, scene.image, depth, size, overlap=overlap, skip_confidence=1)}
        once = (depth - depth.min()) / (depth.max() - depth.min())  # normalised once, for the whole image
        with depth_normalised_by_caller():
            results[ways[2]] = predict_probs_tiled(model, scene.image, once, size, overlap=overlap,
                                                   skip_confidence=1)
        for way, probs in results.items():
            rows[way].append((float(np.abs(probs - gt).mean()), seam_ratio(probs, size, overlap)))
    print(f"{args.scenes} scenes of {args.scale * size}², model size {size}, overlap {overlap}")
    print(f"{'':24s} {'MAE':>7s} {'seam ratio':>10s}")
    for way, values in rows.items():
        mae, seam = np.mean(values, axis=0)
        print(f"{way:24s} {mae:7.4f} {seam:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
