#!/usr/bin/env python
"""Ablation study on synthetic DIS-like data: what each PDFNet component is worth (paper Table 4 style).

  python scripts/ablation.py                                   # all variants, smoke config, ~3 min each on CPU
  python scripts/ablation.py --variants full no_depth --opt train.epochs=8
  python scripts/ablation.py --config configs/dis5k.yaml --data_root DIS5K --out runs/ablation_dis5k   # real data

Variants (each a set of config overrides on top of --config):
  full            the complete model
  no_depth        no depth input (the encoder sees zeros for the depth stream)
  no_patches      no 8x8 full-resolution patch branch
  no_integrity    no depth integrity-prior loss
  no_depth_head   no auxiliary depth decoder (no SiLog loss)
  concat_fusion   concatenation + conv in place of FSE (no BIS, no patch weighting, no CoA)

Every variant trains with the same seed and data; the table reports each run's best validation line. Finished runs
are reused, interrupted ones resumed (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "full": ("PDFNet (full)", []),
    "no_depth": ("w/o depth input", ["model.use_depth=false"]),
    "no_patches": ("w/o patch branch", ["model.use_patches=false"]),
    "no_integrity": ("w/o integrity-prior loss", ["loss.integrity_weight=0"]),
    "no_depth_head": ("w/o depth head (SiLog)", ["model.depth_head=false"]),
    "concat_fusion": ("concat + conv instead of FSE", ["model.fusion=concat"]),
}
COLUMNS = ("maxF", "wF", "Sm", "meanEm", "MAE", "HCE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    p.add_argument("--data_root", type=Path, default=None,
                   help="an existing dataset (default: synthetic data made under --out/data)")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--n_train", type=int, default=64, help="synthetic training scenes")
    p.add_argument("--n_val", type=int, default=16, help="synthetic validation scenes")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--fresh", action="store_true", help="delete previous ablation runs first")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def best_line(run_dir: Path) -> dict:
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return next(h for h in reversed(history) if h["best"])


def format_ablation(rows: dict[str, dict], reference: str | None = "full") -> str:
    """A table of the COLUMNS per variant, with maxF's difference to ``reference`` when it is present."""
    header = ["variant", *COLUMNS] + (["ΔmaxF"] if reference in rows else [])
    lines = [header]
    for name, line in rows.items():
        cells = [VARIANTS[name][0]] + [f"{line[k]:.1f}" if k == "HCE" else f"{line[k]:.3f}" if k in line else "-"
                                       for k in COLUMNS]
        if reference in rows:
            cells.append(f"{line['maxF'] - rows[reference]['maxF']:+.3f}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pdfnet.config import ConfigError, load_config
    from pdfnet.data.datasets import DatasetError
    from pdfnet.data.io import atomic_write_bytes
    from pdfnet.data.synthetic import ensure_synthetic_dataset
    from pdfnet.engine.checkpoint import CheckpointError
    from pdfnet.engine.trainer import Trainer, TrainingError

    if args.fresh:
        for name in args.variants:
            shutil.rmtree(args.out / name, ignore_errors=True)
    data_root = args.data_root
    rows: dict[str, dict] = {}
    try:
        for name in args.variants:
            run_dir = args.out / name
            cfg = load_config(args.config, [*([f"data.root={data_root}"] if data_root else []), *args.opt,
                                            *VARIANTS[name][1], f"train.out_dir={run_dir}"])
            if data_root is None:
                data_root = args.out / "data"
                ensure_synthetic_dataset(data_root, args.n_train, args.n_val, cfg.data.size)
                cfg.data.root = str(data_root)
            if not cfg.data.val_split:
                raise ConfigError("the ablation compares validation metrics: data.val_split must be set")
            print(f"\n=== {name}: {VARIANTS[name][0]} ({' '.join(VARIANTS[name][1]) or 'no change'}) -> {run_dir}")
            last = run_dir / "last.pth"
            Trainer(cfg, resume=last if last.is_file() else None, show_progress=not args.no_progress).fit()
            rows[name] = best_line(run_dir)
    except (ConfigError, DatasetError, CheckpointError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = format_ablation(rows)
    print("\nAblation (best validation line of each run; lower is better for MAE and HCE)\n")
    print(table)
    atomic_write_bytes(args.out / "ablation.txt", (table + "\n").encode("utf-8"))
    print(f"\nwrote {args.out / 'ablation.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
