#!/usr/bin/env python
"""The whole pipeline in about three minutes on a laptop CPU, with nothing to download.

  python scripts/quickstart.py                  # -> runs/quickstart/{data,run,panel.png}

1. makes a synthetic DIS-like dataset (thin wires, meshes, rings and trees over clutter, with integrity-prior depth),
2. trains the tiny model of configs/smoke.yaml on it (validation every epoch, checkpoints, tensorboard),
3. evaluates best.pth on the validation split with the standard DIS metrics, beside the untrained model,
4. writes a panel of predictions (image | depth | GT | prediction).

Run it again to resume an interrupted run or to re-evaluate a finished one; --fresh starts over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="working folder")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    p.add_argument("--n_train", type=int, default=64, help="synthetic training scenes")
    p.add_argument("--n_val", type=int, default=16, help="synthetic validation scenes")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--fresh", action="store_true", help="delete the previous quickstart run first")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pdfnet.config import ConfigError, load_config
    from pdfnet.data.datasets import validation_samples
    from pdfnet.data.io import write_png
    from pdfnet.data.synthetic import ensure_synthetic_dataset
    from pdfnet.engine.distributed import DistContext
    from pdfnet.engine.inference import load_model
    from pdfnet.engine.trainer import Trainer, TrainingError
    from pdfnet.engine.validation import panel_grid, validate
    from pdfnet.metrics.report import format_table

    started = time.perf_counter()
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    data_root, run_dir = args.out / "data", args.out / "run"
    try:
        cfg = load_config(args.config, [f"data.root={data_root}", f"train.out_dir={run_dir}", *args.opt])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[1/4] synthetic data -> {data_root}")
    ensure_synthetic_dataset(data_root, args.n_train, args.n_val, cfg.data.size)

    print(f"[2/4] training ({args.config.name}: {cfg.model.backbone}, {cfg.data.size} px, {cfg.train.epochs} epochs)"
          f" -> {run_dir}")
    last = run_dir / "last.pth"
    try:
        Trainer(cfg, resume=last if last.is_file() else None, show_progress=not args.no_progress).fit()
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print("[3/4] evaluating best.pth on DIS-VD (standard DIS metrics, HCE included)")
    model, _ = load_model(run_dir / "best.pth", "cpu")
    samples = validation_samples(cfg.data)
    trained, panels = validate(model, samples, cfg.data.size, DistContext(), with_hce=True, panels=4, panel_size=192)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    untrained = history[0]
    best = next(h for h in reversed(history) if h["best"])
    print()
    print(format_table({"untrained (epoch 0)": untrained, f"best.pth (epoch {best['epoch']})": trained}))

    print("\n[4/4] panel of predictions (image | depth | GT | prediction)")
    write_png(args.out / "panel.png", panel_grid(panels))
    print(f"wrote {args.out / 'panel.png'}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s. Next: tensorboard --logdir {run_dir / 'tb'}; "
          f"pdfnet eval --ckpt {run_dir.resolve() / 'best.pth'} --split DIS-VD --data_root {data_root.resolve()}; "
          f"pdfnet predict --ckpt {run_dir.resolve() / 'best.pth'} --input {data_root.resolve() / 'DIS-VD' / 'im'} "
          f"--output {args.out.resolve() / 'predictions'} --depth_dir {data_root.resolve() / 'DIS-VD' / 'depth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
