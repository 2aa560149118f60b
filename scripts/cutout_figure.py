#!/usr/bin/env python
"""The cut-out figure of docs/inference-and-export.md, and the time of the foreground estimate.

  python scripts/cutout_figure.py --out docs/cutout_before_after.png

Panels: the photo (a synthetic soft edge with hair-like strands over a blue background, known parts), the cut-out
with the photo's colours (``--foreground none``) and with the estimated foreground (``fast``), both composited on
white, and the true foreground on white. Prints the mean colour error in the soft edge and the estimate's time per
1024² and 3840x2160 image on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdfnet.data.io import atomic_write_bytes  # noqa: E402
from pdfnet.data.synthetic import hair_composite  # noqa: E402
from pdfnet.engine.cutout import estimate_foreground  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--no_timing", action="store_true", help="skip the 1024² and 4K timings")
    args = p.parse_args(argv)
    import cv2

    image, alpha, fg, _ = hair_composite(args.size)
    estimated = estimate_foreground(image, alpha)
    band = (alpha > 0.02) & (alpha < 0.98)
    a = alpha[..., None]
    on_white = [image * a + (1 - a), estimated * a + (1 - a), fg * a + (1 - a)]
    panels = [image] + on_white
    gap = np.ones((args.size, 8, 3), np.float32)
    strip = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
    ok, png = cv2.imencode(".png", cv2.cvtColor((strip * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    atomic_write_bytes(args.out, png.tobytes())
    print(f"wrote {args.out}: photo | photo's colours on white | estimated foreground on white | true foreground "
          "on white")
    print(f"mean |colour error| in the soft edge ({int(band.sum())} px): photo's colours "
          f"{np.abs(image - fg)[band].mean():.4f}, estimated {np.abs(estimated - fg)[band].mean():.4f}")
    if not args.no_timing:
        rng = np.random.default_rng(0)
        for h, w in ((1024, 1024), (2160, 3840)):
            img, al = rng.random((h, w, 3), np.float32), rng.random((h, w), np.float32)
            estimate_foreground(img, al)
            started = time.perf_counter()
            estimate_foreground(img, al)
            print(f"estimate_foreground {w}x{h}: {time.perf_counter() - started:.2f} s (CPU, float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
