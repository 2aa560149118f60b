"""Train PDFNet (``pdfnet train`` = ``python train.py``).

  pdfnet train --config configs/dis5k.yaml
  pdfnet train --config configs/smoke.yaml --opt data.root=runs/synthetic_dis train.epochs=5
  pdfnet train --resume auto --config configs/dis5k.yaml         # continue <train.out_dir>/last.pth if present
  pdfnet train --resume runs/dis5k/last.pth                       # the checkpoint's own config (+ --opt)
  torchrun --nproc_per_node 4 train.py --config configs/dis5k.yaml  # one process per GPU (DDP)
  torchrun --max_restarts 3 ... train.py ...                      # a restarted group resumes last.pth itself

Every knob is a config key (pdfnet/config.py); --opt overrides any of them as key=value (YAML value).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import Config, ConfigError, config_to_dict, load_config
from ..data.datasets import DatasetError, check_root
from ..hub_files import pretrained_backbone_problem
from .common import add_opt_argument, make_parser


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = make_parser(__doc__, prog)
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: the checkpoint's with --resume)")
    add_opt_argument(p)
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a last.pth; 'auto' = <train.out_dir>/last.pth when it exists")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bars (logs only)")
    return p.parse_args(argv)


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def resolve_run(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """The run's config and the checkpoint to resume (None: a new run)."""
    if args.resume not in (None, "auto"):
        from ..engine.checkpoint import CheckpointError, load_checkpoint

        ckpt_path = Path(args.resume)
        stored = load_checkpoint(ckpt_path).get("config")
        if args.config is None and stored is None:
            raise CheckpointError(f"{ckpt_path} stores no config; pass --config")
        cfg = load_config(args.config, args.opt, base=stored if args.config is None else None)
        if stored is not None:
            changed = [c for c in _changed_keys(stored, config_to_dict(cfg)) if not c.startswith("train.out_dir")]
            if changed:
                print("resuming with a changed config:\n  " + "\n  ".join(changed))
        return cfg, ckpt_path
    cfg = load_config(args.config, args.opt)
    last = Path(cfg.train.out_dir) / "last.pth"
    if args.resume == "auto":
        if last.is_file():
            return cfg, last
        print(f"--resume auto: no {last} yet, starting a new run")
        return cfg, None
    if last.is_file():
        raise ConfigError(f"{last} exists: pass --resume auto to continue that run, or choose another "
                          "train.out_dir (nothing is overwritten)")
    return cfg, None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    # Before CUDA starts: the caching allocator grows segments instead of fragmenting into fixed ones (training's
    # activations change size between forward, backward and validation). A value the user set wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if args.resume is None and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        from ..engine.distributed import elastic_restart_count

        # torchrun restarted the group after a worker died: continue the run instead of refusing its last.pth.
        print(f"torchrun restart {elastic_restart_count()}: resuming <train.out_dir>/last.pth if present "
              "(as --resume auto)", flush=True)
        args.resume = "auto"
    try:  # the config (and a fresh run's data root) are checked before torch is imported: mistakes show at once
        if args.resume in (None, "auto"):
            cfg, resume = resolve_run(args)
            check_root(cfg.data.root)
            if resume is None and (problem := pretrained_backbone_problem(cfg.model.pretrained)):
                raise ConfigError(problem)  # before the run folder exists
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ..device import DeviceError
    from ..engine.checkpoint import CheckpointError
    from ..engine.distributed import DistributedSetupError
    from ..engine.trainer import Trainer, TrainingError
    from ..hub_files import WeightsFileError

    try:
        if args.resume not in (None, "auto"):
            cfg, resume = resolve_run(args)
        Trainer(cfg, resume=resume, show_progress=not args.no_progress).fit()
    except (ConfigError, DatasetError, CheckpointError, TrainingError, DistributedSetupError, DeviceError,
            WeightsFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: continue with --resume auto (last.pth holds the last completed epoch or "
              "train.save_every_steps step)", file=sys.stderr)
        return 130
    return 0
