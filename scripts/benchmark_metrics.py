#!/usr/bin/env python
"""Time our DIS metrics against PySODMetrics and the official-semantics HCE, on the same pairs, and check agreement.

  python scripts/benchmark_metrics.py --n 20 --size 1024                     # synthetic thin-structure pairs
  python scripts/benchmark_metrics.py --real ../shared/data/dis5k-samples/DIS-TE1 --workers 2

Real mode uses the GT masks of a DIS split at their own resolution and makes predictions from them (blurred, noisy,
shifted), since what is measured is the evaluator, not a model. Single process against single process; --workers N
also times our evaluator with N processes. Needs the dev extras (pysodmetrics).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pdfnet.data.io import read_gray_u8
from pdfnet.metrics import Evaluator
from pdfnet.metrics.hce import gt_skeleton, hce_counts, hce_counts_reference
from pdfnet.metrics.prepare import match_size
from pdfnet.metrics.reference import pysodmetrics_values

STANDARD = ("maxF", "meanF", "adpF", "wF", "MAE", "Sm", "meanEm", "maxEm", "adpEm")


def synthetic_gt(size: int, rng: np.random.Generator) -> np.ndarray:
    gt = np.zeros((size, size), np.uint8)
    for _ in range(3):
        cv2.circle(gt, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(size // 20, size // 6)), 255,
                   -1)
    for _ in range(25):  # wires and lattices
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(gt, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 255, int(rng.integers(1, 5)))
    return gt


def fake_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    soft = cv2.GaussianBlur(gt, (0, 0), 2.0).astype(np.float32)
    soft = np.roll(soft, int(rng.integers(-3, 4)), axis=1) + rng.normal(0, 25, gt.shape).astype(np.float32)
    return np.clip(soft, 0, 255).astype(np.uint8)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="synthetic pairs")
    p.add_argument("--size", type=int, default=1024, help="synthetic pair size (square)")
    p.add_argument("--real", default="", help="a DIS split folder with gt/ (uses its masks)")
    p.add_argument("--limit", type=int, default=0, help="use at most this many real masks")
    p.add_argument("--workers", type=int, default=1, help="also time our evaluator with this many processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    if args.real:
        paths = sorted((Path(args.real) / "gt").glob("*.png"))[: args.limit or None]
        if not paths:
            raise SystemExit(f"no masks in {Path(args.real) / 'gt'}")
        gts = [(path.stem, read_gray_u8(path)) for path in paths]
    else:
        gts = [(f"synthetic_{i:03d}", synthetic_gt(args.size, rng)) for i in range(args.n)]
    pairs = [(name, fake_prediction(gt, rng), gt) for name, gt in gts]
    megapixels = np.mean([gt.size for _, _, gt in pairs]) / 1e6
    n = len(pairs)

    reference, t_ref = timed(lambda: pysodmetrics_values((pred, gt) for _, pred, gt in pairs))
    ours_std = Evaluator(hce=False)
    _, t_ours = timed(lambda: [ours_std.update(pred, gt, name) for name, pred, gt in pairs])
    ours = ours_std.compute()["metrics"]
    worst = max(abs(ours[k] - reference[k]) for k in STANDARD)

    ref_hce, t_ref_hce = timed(lambda: [sum(hce_counts_reference(match_size(pr, g.shape), g)) for _, pr, g in pairs])
    cold, t_cold = timed(lambda: [sum(hce_counts(match_size(pr, g.shape), g)) for _, pr, g in pairs])
    skeletons = [gt_skeleton(g) for _, _, g in pairs]
    warm, t_warm = timed(lambda: [sum(hce_counts(match_size(pr, g.shape), g, sk))
                                  for (_, pr, g), sk in zip(pairs, skeletons)])
    hce_equal = ref_hce == cold == warm

    rows = [("standard set (9 metrics)", "pysodmetrics", t_ref, t_ours),
            ("HCE, cold (skeletonise)", "official semantics", t_ref_hce, t_cold),
            ("HCE, cached GT skeletons", "official semantics", t_ref_hce, t_warm)]
    result = {"pairs": n, "mean_megapixels": megapixels, "max_abs_diff_standard": worst, "hce_identical": hce_equal}
    if args.workers > 1:
        with tempfile.TemporaryDirectory() as cache:
            parallel = Evaluator(hce=True, skeleton_cache=cache, workers=args.workers)
            _, t_par = timed(lambda: parallel.update_many(pairs))
        rows.append((f"all 10 metrics, {args.workers} workers", "pysod + official HCE", t_ref + t_ref_hce, t_par))

    print(f"\n{n} pairs, {megapixels:.2f} MP on average ({'real GT: ' + args.real if args.real else 'synthetic'})")
    print(f"{'what':34s} {'reference':>20s} {'ref ms/pair':>12s} {'ours ms/pair':>13s} {'ratio':>7s}")
    for what, ref_name, t_r, t_o in rows:
        print(f"{what:34s} {ref_name:>20s} {1000 * t_r / n:12.1f} {1000 * t_o / n:13.1f} {t_o / t_r:7.3f}")
        result[what] = {"reference_ms_per_pair": 1000 * t_r / n, "ours_ms_per_pair": 1000 * t_o / n,
                        "ratio": t_o / t_r}
    print(f"agreement: max |ours - pysodmetrics| over the 9 standard metrics = {worst:.2e}; "
          f"HCE identical to the official semantics on every pair: {hce_equal}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if worst > 1e-4 or not hce_equal:
        raise SystemExit("metric values disagree with the references")


if __name__ == "__main__":
    main()
