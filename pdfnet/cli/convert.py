"""Convert an official PDFNet checkpoint (e.g. the released PDFNet_Best.pth) to this project's formats, or write one
of our own checkpoints as a hub folder. ``pdfnet convert`` = ``python scripts/convert_official.py``.

  pdfnet convert PDFNet_Best.pth pdfnet_v2025.03.pth                       # our .pth checkpoint
  pdfnet convert PDFNet_Best.pth --hub_dir hub/pdfnet-v2025.03             # a Hugging Face Hub folder
  pdfnet convert PDFNet_Best.pth --hub_dir hub/pdfnet --metrics te.json --push owner/pdfnet-dis5k
  pdfnet convert runs/dis5k/best.pth --hub_dir hub/my-pdfnet --metrics te.json    # our own checkpoint -> hub

The official code version (v2025.03 for the released weights, v2026 for the current official code) is detected from
the keys unless --variant is given. Both outputs hold the resolved config (model.variant, model.depth_head), so
`pdfnet eval --ckpt` and `pdfnet predict --ckpt` need nothing else. The hub folder holds model.safetensors,
config.json and a model card (with the metrics of an `pdfnet eval --json` file when --metrics is given); it loads
with `PDFNet.from_pretrained(DIR)`. Files are written atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import make_parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = make_parser(__doc__, prog)
    p.add_argument("official", type=Path,
                   help="official checkpoint (.pth state dict, possibly wrapped), or our .pth (with --hub_dir/--push)")
    p.add_argument("output", type=Path, nargs="?", default=None, help="where to write our .pth checkpoint")
    p.add_argument("--hub_dir", type=Path, default=None,
                   help="also (or instead) write a save_pretrained folder: model.safetensors, config.json, README.md")
    p.add_argument("--metrics", type=Path, default=None,
                   help="`pdfnet eval --json` output whose numbers go on the model card (with --hub_dir/--push)")
    p.add_argument("--push", default=None, metavar="OWNER/NAME",
                   help="publish the hub folder to this Hugging Face Hub repository (needs `hf auth login`)")
    p.add_argument("--variant", choices=("v2025.03", "v2026"), default=None, help="override version detection")
    args = p.parse_args(argv)
    if args.output is None and args.hub_dir is None and args.push is None:
        p.error("name an output: OUTPUT (.pth), --hub_dir DIR and/or --push OWNER/NAME")
    if not args.official.is_file():
        print(f"error: official checkpoint not found: {args.official}", file=sys.stderr)
        return 1
    if args.metrics is not None and not args.metrics.is_file():
        print(f"error: metrics file not found: {args.metrics}", file=sys.stderr)
        return 1

    from ..engine.checkpoint import (
        CheckpointError,
        atomic_save,
        is_own_checkpoint,
        load_checkpoint,
        make_checkpoint,
        model_from_checkpoint,
        official_config,
    )
    from ..engine.hub import push_to_hub, save_pretrained
    from ..hub_files import HubFilesError
    from ..models import count_parameters
    from ..models.official import OfficialCheckpointError, load_official, unwrap_state_dict

    try:
        obj = load_checkpoint(args.official)
        if is_own_checkpoint(obj):  # e.g. a best.pth of ours: nothing to convert, but it may still go to the hub
            if args.output is not None:
                print(f"error: {args.official} is already a checkpoint of this project: use it as it is (--ckpt "
                      f"{args.official}). To write it as a hub folder or publish it: pdfnet convert {args.official} "
                      "--hub_dir DIR [--push OWNER/NAME] (or model.save_pretrained(DIR) in Python)", file=sys.stderr)
                return 2
            del obj
            model, cfg = model_from_checkpoint(args.official, "cpu", impl="reference")
        else:
            model = load_official(unwrap_state_dict(obj), variant=args.variant, copy_tensors=False)
            cfg = official_config(model)
    except (FileNotFoundError, OfficialCheckpointError, CheckpointError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    written = []
    try:
        if args.output is not None:
            atomic_save(make_checkpoint(model, cfg, epoch=0, source=str(args.official)), args.output)
            written.append(str(args.output))
        card = {"metrics": args.metrics, "license": "other", "source": args.official.name}
        if args.hub_dir is not None:
            save_pretrained(model, cfg, args.hub_dir, repo_id=args.push, **card)
            written.append(f"{args.hub_dir}/ (hub format)")
        if args.push is not None:
            written.append(push_to_hub(model, cfg, args.push, **card))
    except HubFilesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.official} -> {', '.join(written)}: variant {model.variant}, depth head "
          f"{'yes' if model.has_depth_head else 'no'}, {count_parameters(model):,} parameters")
    return 0
