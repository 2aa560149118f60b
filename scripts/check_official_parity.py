#!/usr/bin/env python
"""Compare our PDFNet with the official code at any input size, for either official version, on the same weights.

  git clone https://github.com/Tennine2077/PDFNet /tmp/PDFNet                      # v2026 (HEAD)
  git -C /tmp/PDFNet worktree add /tmp/PDFNet-v2025.03 802b477                      # v2025.03
  python scripts/check_official_parity.py --official_dir /tmp/PDFNet --variant v2026 --sizes 320 384 512
  python scripts/check_official_parity.py --official_dir /tmp/PDFNet-v2025.03 --variant v2025.03 --sizes 384

Both models get the official model's own random initialisation (seeded) through the official state dict, and the
same smooth random inputs; the script prints the max |difference| of the main logits and the five side logits and
exits non-zero above --tol. The official code is never part of this repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_inference import _make_inputs  # noqa: E402
from official_code import build_official_model  # noqa: E402

from pdfnet.models.official import load_official  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official_dir", required=True, help="checkout of the official code at the wanted version")
    p.add_argument("--variant", choices=("v2025.03", "v2026"), required=True, help="version of that checkout")
    p.add_argument("--sizes", type=int, nargs="+", default=[384])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    official = build_official_model(args.official_dir).eval()
    ours = load_official(official.state_dict(), variant=args.variant)
    # The official decoder returns [main, side1..side5]; capture them around its inference call.
    captured = {}
    official.decoder.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    worst = 0.0
    for size in args.sizes:
        img, depth = _make_inputs(size, args.batch, seed=size)
        with torch.no_grad():
            official.inference(img, depth)
            ref = captured["out"]
            got = ours(img, depth)
        diffs = [float((a - b).abs().max()) for a, b in zip(got, ref)]
        worst = max(worst, *diffs)
        names = ["main"] + [f"side{i}" for i in range(1, 6)]
        print(f"{args.variant} {size}x{size} batch {args.batch}: " + ", ".join(f"{n} {d:.1e}" for n, d in
                                                                             zip(names, diffs)))
    print(f"max |logit difference| {worst:.2e} ({'OK' if worst <= args.tol else 'ABOVE'} tolerance {args.tol})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
