#!/usr/bin/env python
"""Data-loading throughput of the training recipe: samples/s per loader worker at a training size, with the recipe's
depth maps (an input map drawn among three per sample, and a depth-loss target), without the resized-sample cache,
filling it (cold) and reading it (warm); augmentation on, as in training. Optionally side by side with a baseline
revision of this repository in the same run.

  python scripts/benchmark_data.py --root ../shared/data/dis5k-samples --split DIS-TE1 --size 1024 --baseline HEAD~5
  python scripts/benchmark_data.py --synthetic 32 --synthetic_size 2048 --size 1024

Splits without the recipe's depth folders (depth_large, depth_base, depth_small, depth_large_1024) get 16-bit maps
at the image's resolution made here (a smooth function of the image: the files, not their content, cost the time),
in a temporary copy of the split. Each implementation runs in its own process (the baseline from ``git archive``
of ``--baseline``), one process = one loader worker; ``--workers N ...`` also times a DataLoader with N workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE_DEPTH = ("depth_large", "depth_base", "depth_small")
RECIPE_TARGET = "depth_large_1024"


def recipe_split(root: Path, split: str, out: Path) -> Path:
    """A copy of ``root/split`` (images and masks linked) with the recipe's four depth folders; returns its root."""
    import cv2
    import numpy as np

    from pdfnet.data.datasets import discover
    from pdfnet.data.io import read_rgb_u8, write_png

    samples = discover(root, split, need_depth=False)
    for sample in samples:
        for kind, path in (("im", sample.image), ("gt", sample.mask)):
            link = out / split / kind / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(path.resolve(), link)
        gray = cv2.cvtColor(read_rgb_u8(sample.image), cv2.COLOR_RGB2GRAY).astype(np.float32)
        smooth = cv2.GaussianBlur(gray, (0, 0), 25) / 255.0
        for i, folder in enumerate(RECIPE_DEPTH + (RECIPE_TARGET,)):
            depth = np.clip((smooth * (0.8 + 0.1 * i)) * 65535, 0, 65535).astype(np.uint16)
            write_png(out / split / folder / f"{sample.name}.png", depth)
    return out


def measure(root: str, split: str, size: int, repeats: int, workers: list[int]) -> dict:
    """In this process (one loader worker): samples/s without cache, cache cold, cache warm; then DataLoaders."""
    import torch

    from pdfnet.config import AugmentConfig, DataConfig
    from pdfnet.data.dataset import DISDataset
    from pdfnet.data.datasets import training_samples

    torch.set_num_threads(1)
    cfg = DataConfig(root=root, train_split=split, depth_choices=list(RECIPE_DEPTH), depth_target_dir=RECIPE_TARGET,
                     size=size)
    samples, _ = training_samples(cfg)

    def rate(dataset: DISDataset, epoch: int) -> float:
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[(epoch, i)]
        return len(dataset) / (time.perf_counter() - start)

    import pdfnet

    out = {"samples": len(samples), "package": str(Path(pdfnet.__file__).parent)}
    with tempfile.TemporaryDirectory() as cache:
        out["no_cache"] = max(rate(DISDataset(samples, size, AugmentConfig()), e) for e in range(repeats))
        cached = DISDataset(samples, size, AugmentConfig(), cache_dir=cache)
        out["cache_cold"] = rate(cached, 0)
        out["cache_warm"] = max(rate(cached, e) for e in range(1, repeats + 1))
        out["cache_mib_per_sample"] = sum(p.stat().st_size for p in Path(cache).iterdir()) / 2**20 / len(samples)
        for n in workers:
            loader = torch.utils.data.DataLoader(cached, batch_size=1, num_workers=n, shuffle=False,
                                                 collate_fn=lambda items: items)
            for _ in loader:  # warm the workers up
                break
            start = time.perf_counter()
            count = sum(len(batch) for _ in range(repeats) for batch in loader)
            out[f"loader_{n}_workers"] = count / (time.perf_counter() - start)
    return out


def run_implementation(src: Path, args: argparse.Namespace, root: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "--root", str(root), "--split", args.split,
           "--size", str(args.size), "--repeats", str(args.repeats), "--workers", *map(str, args.workers)]
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src)
    if done.returncode != 0:
        raise SystemExit(f"{src}: failed\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve() != (src / "pdfnet").resolve():
        raise SystemExit(f"measured {result['package']}, not {src / 'pdfnet'}: run from a plain checkout")
    return result


def extract(revision: str, into: Path) -> Path:
    """This repository's ``pdfnet`` package at ``revision`` (git archive) under ``into``."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), revision, "pdfnet"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="dataset root (DIS-5K layout)")
    p.add_argument("--split", default="DIS-TE1")
    p.add_argument("--synthetic", type=int, default=0, help="instead: make this many synthetic scenes")
    p.add_argument("--synthetic_size", type=int, default=2048)
    p.add_argument("--size", type=int, default=1024, help="training size")
    p.add_argument("--repeats", type=int, default=2, help="epochs per measurement (the best is reported)")
    p.add_argument("--workers", type=int, nargs="*", default=[], help="also time a DataLoader with N workers")
    p.add_argument("--baseline", default="", help="a git revision of this repository to measure side by side")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(measure(args.root, args.split, args.size, args.repeats, args.workers)))
        return 0
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.synthetic:
            from pdfnet.data.synthetic import write_split

            source = tmp / "synthetic"
            write_split(source, args.split, args.synthetic, args.synthetic_size, seed=0)
        elif args.root:
            source = Path(args.root)
        else:
            p.error("give --root or --synthetic N")
        root = recipe_split(source, args.split, tmp / "recipe")
        results = {"current": run_implementation(REPO, args, root)}
        if args.baseline:
            results[f"baseline {args.baseline}"] = run_implementation(extract(args.baseline, tmp), args, root)
    current = results["current"]
    print(f"{current['samples']} samples of {args.root or 'synthetic'}/{args.split} with the recipe's depth maps "
          f"at {args.size}², augmented; samples/s in one process (= one loader worker)")
    print(f"{'':28s} {'no cache':>9s} {'cache cold':>11s} {'cache warm':>11s} {'MiB/sample':>11s}" +
          "".join(f" {f'{n} workers':>10s}" for n in args.workers))
    for label, r in results.items():
        print(f"{label:28s} {r['no_cache']:9.2f} {r['cache_cold']:11.2f} {r['cache_warm']:11.2f} "
              f"{r.get('cache_mib_per_sample', float('nan')):11.1f}" +
              "".join(f" {r[f'loader_{n}_workers']:10.2f}" for n in args.workers))
    if args.baseline:
        base = results[f"baseline {args.baseline}"]
        ratio = {k: current[k] / base[k] for k in ("no_cache", "cache_cold", "cache_warm")}
        print(f"{'current / baseline':28s} {ratio['no_cache']:8.1f}x {ratio['cache_cold']:10.1f}x "
              f"{ratio['cache_warm']:10.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "json"},
                                         "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
