"""Count the aten ops of one training step (forward + PDFNetLoss + backward): on a GPU, about one kernel launch each.

    python scripts/count_ops.py --size 1024 --batch 2                 # the GPU path (model.impl on 'meta')
    python scripts/count_ops.py --size 512 --batch 2 --impl lean --json ops.json

Shapes only, no arithmetic (fake tensors with meta storage), so the paper model at 1024² counts in seconds on any
machine. Views and allocations are not counted; autocast's casts are. Prints the total and the most frequent ops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="square input size (multiple of 64)")
    p.add_argument("--batch", type=int, default=2, help="samples per step")
    p.add_argument("--impl", choices=("auto", "reference", "lean"), default="auto",
                   help="model implementation; auto = what model.impl picks for the meta device (the GPU path)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="bf16", help="autocast dtype")
    p.add_argument("--grad_checkpointing", choices=("none", "encoder", "all"), default="none")
    p.add_argument("--backbone", default="swin_base_patch4_window12_384", help="model.backbone (paper: Swin-B)")
    p.add_argument("--emb_dim", type=int, default=128, help="model.emb_dim (paper: 128)")
    p.add_argument("--top", type=int, default=15, help="how many of the most frequent ops to list")
    p.add_argument("--json", type=Path, default=None, help="also write {total, ops, settings} here")
    args = p.parse_args(argv)
    if args.size % 64 or args.size < 128:
        p.error(f"--size must be a multiple of 64 and at least 128, got {args.size}")

    from pdfnet.config import load_config
    from pdfnet.engine.profiling import count_training_ops

    cfg = load_config(None, [f"model.backbone={args.backbone}", f"model.emb_dim={args.emb_dim}",
                             f"model.grad_checkpointing={args.grad_checkpointing}", f"data.size={args.size}",
                             f"train.amp={args.amp}", f"model.impl={args.impl}"])
    started = time.perf_counter()
    ops = count_training_ops(cfg, args.batch, None if args.impl == "auto" else args.impl,
                             progress=lambda text: print(text, file=sys.stderr))
    total = sum(ops.values())
    impl = args.impl if args.impl != "auto" else "reference (auto on meta)"
    print(f"{total} aten ops (non-view) in one training step: {args.size}², batch {args.batch}, amp {args.amp}, "
          f"grad_checkpointing {args.grad_checkpointing}, impl {impl}  [{time.perf_counter() - started:.1f} s]")
    for name, n in list(ops.items())[:args.top]:
        print(f"  {n:8d}  {name}")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "top")}
        args.json.write_text(json.dumps({"total": total, "ops": ops, "settings": settings}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
