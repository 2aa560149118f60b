#!/usr/bin/env python
"""Draw the README's figure with `pdfnet predict` (pdfnet/cli/predict.py).

  python scripts/quickstart.py            # trains the tiny model this uses (runs/quickstart/run/best.pth)
  python scripts/readme_figure.py --out docs/predict_example.jpg

Three synthetic scenes the model never saw (indices outside its training and validation sets) go through predict.py
twice: ``--format mask`` and ``--format overlay``. Rows: image | pseudo-depth | ground truth | predicted mask |
overlay. Everything shown is predict.py's output, pasted side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from pdfnet.data.io import atomic_write_bytes, read_gray_u8, read_rgb_u8, write_png  # noqa: E402
from pdfnet.data.synthetic import write_split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=REPO / "runs" / "quickstart" / "run" / "best.pth")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "predict_example.jpg")
    p.add_argument("--scenes", type=int, default=3)
    p.add_argument("--size", type=int, default=256, help="scene size in pixels")
    args = p.parse_args(argv)
    if not args.ckpt.is_file():
        print(f"error: {args.ckpt} not found; run `python scripts/quickstart.py` first or pass --ckpt",
              file=sys.stderr)
        return 2
    from pdfnet.cli.predict import main as predict

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp, "photos", args.scenes, args.size, seed=0, first_index=900_000)
        split = tmp / "photos"
        for fmt in ("mask", "overlay"):
            rc = predict(["--ckpt", str(args.ckpt), "--input", str(split / "im"), "--output",
                               str(tmp / fmt), "--depth_dir", str(split / "depth"), "--format", fmt,
                               "--workers", "0"])
            if rc != 0:
                return rc
        rows = []
        for image_path in sorted((split / "im").iterdir()):
            name = image_path.stem
            gray = [read_gray_u8(split / "depth" / f"{name}.png"), read_gray_u8(split / "gt" / f"{name}.png"),
                    read_gray_u8(tmp / "mask" / f"{name}.png")]
            tiles = [read_rgb_u8(image_path)] + [np.repeat(g[..., None], 3, axis=2) for g in gray]
            tiles.append(read_rgb_u8(tmp / "overlay" / f"{name}.png"))
            gap = np.full((args.size, 4, 3), 255, np.uint8)
            rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
        figure = np.concatenate([x for r in rows for x in (r, np.full((4, r.shape[1], 3), 255, np.uint8))][:-1])
    if args.out.suffix.lower() in (".jpg", ".jpeg"):  # the noisy synthetic textures make a PNG ~1.4 MB
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        if not ok:
            raise OSError(f"could not encode {args.out}")
        atomic_write_bytes(args.out, data.tobytes())
    else:
        write_png(args.out, figure)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
