#!/usr/bin/env python
"""Convert an official PDFNet checkpoint (e.g. the released PDFNet_Best.pth) to this project's checkpoint format.

  python scripts/convert_official.py PDFNet_Best.pth pdfnet_v2025.03.pth

The official code version (v2025.03 for the released weights, v2026 for the current official code) is detected from
the keys unless --variant is given. The output holds our state dict and the resolved config (model.variant,
model.depth_head), so `evaluate.py --ckpt` and `predict.py --ckpt` need nothing else. Written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pdfnet.config import Config
from pdfnet.engine.checkpoint import atomic_save, make_checkpoint
from pdfnet.models import count_parameters
from pdfnet.models.official import OfficialCheckpointError, load_official


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("official", type=Path, help="official checkpoint (.pth state dict, possibly wrapped)")
    p.add_argument("output", type=Path, help="where to write our checkpoint")
    p.add_argument("--variant", choices=("v2025.03", "v2026"), default=None, help="override version detection")
    args = p.parse_args(argv)
    try:
        model = load_official(args.official, variant=args.variant)
    except (FileNotFoundError, OfficialCheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    cfg = Config()
    cfg.model.variant = model.variant
    cfg.model.depth_head = model.has_depth_head
    atomic_save(make_checkpoint(model, cfg, epoch=0, source=str(args.official)), args.output)
    print(f"{args.official} -> {args.output}: variant {model.variant}, depth head "
          f"{'yes' if model.has_depth_head else 'no'}, {count_parameters(model):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
