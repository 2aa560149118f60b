#!/usr/bin/env python
"""Data-loading throughput (samples/s) at a training size, without and with the on-disk resized-sample cache.

  python scripts/benchmark_data.py --root ../shared/data/dis5k-samples --split DIS-TE1 --size 1024
  python scripts/benchmark_data.py --synthetic 32 --synthetic_size 2048 --size 1024

DIS images are large (up to ~5500 px); decoding and resizing them every epoch can starve a GPU. The first pass over
the cache fills it (cold); the second reads resized samples (warm). Augmentation is on in every pass, as in
training. Single process; data-loader workers multiply the figures roughly by their count.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pdfnet.config import AugmentConfig
from pdfnet.data.dataset import DISDataset
from pdfnet.data.datasets import discover
from pdfnet.data.synthetic import write_split


def throughput(dataset: DISDataset) -> float:
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="dataset root (DIS-5K or official layout)")
    p.add_argument("--split", default="DIS-TE1")
    p.add_argument("--synthetic", type=int, default=0, help="instead: make this many synthetic scenes")
    p.add_argument("--synthetic_size", type=int, default=2048)
    p.add_argument("--size", type=int, default=1024, help="training size")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "data"
        if args.synthetic:
            write_split(root, args.split, args.synthetic, args.synthetic_size, seed=0)
        if not root.is_dir():
            raise SystemExit("give --root or --synthetic N")
        samples = discover(root, args.split, need_depth=False)
        rows = []
        for label, augment in (("augmented", AugmentConfig()), ("no augmentation", AugmentConfig(enabled=False))):
            cache = Path(tmp) / f"cache_{len(rows)}"
            no_cache = throughput(DISDataset(samples, args.size, augment))
            cached = DISDataset(samples, args.size, augment, cache_dir=cache)
            cold, warm = throughput(cached), throughput(cached)
            rows.append((label, no_cache, cold, warm))
    print(f"{len(samples)} samples from {args.root or 'synthetic'}/{args.split} at {args.size}x{args.size}, "
          "samples/s in one process")
    print(f"{'':16s} {'no cache':>9s} {'cache cold':>11s} {'cache warm':>11s}")
    for label, no_cache, cold, warm in rows:
        print(f"{label:16s} {no_cache:9.2f} {cold:11.2f} {warm:11.2f}  (warm/no cache {warm / no_cache:.1f}x)")


if __name__ == "__main__":
    main()
