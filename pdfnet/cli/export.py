"""Export a PDFNet checkpoint (ours, official, a save_pretrained folder or a hub id) to ONNX and check it against
PyTorch with onnxruntime. ``pdfnet export`` = ``python scripts/export_onnx.py``.

  pdfnet export --ckpt best.pth --out pdfnet.onnx                       # [1,3,S,S] -> [1,1,S,S]
  pdfnet export --ckpt PDFNet_Best.pth --out pdfnet.onnx --size 1024 --dynamic

Inputs, in this order: ``image`` [B,3,H,W] float32 (RGB / 255, ImageNet mean/std normalised) and ``depth`` [B,1,H,W]
float32 (any range: min-max normalised per sample inside). Output: ``probs`` [B,1,H,W] in [0,1]. Without --dynamic,
B = 1 and H = W = --size. With --dynamic, B, H and W are free: the graph resizes the inputs to --size, runs the
network and resizes the probabilities back (what predict.py does). Needs the extras: pip install -e ".[onnx]".
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_checkpoint_argument, checkpoint_problem, make_parser, model_size, positive_int

TOLERANCE = 1e-3  # max |probability difference| between onnxruntime and PyTorch


def verification_shapes(size: int, dynamic: bool, batch: int = 1) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the two verification inputs: for a fixed graph, two inputs of its one shape."""
    if not dynamic:
        return [(1, size, size), (1, size, size)]
    return [(batch, size, size), (1, max(64, (3 * size // 4) // 64 * 64), size + 128)]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = make_parser(__doc__, prog)
    add_checkpoint_argument(p)
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--size", type=model_size, default=None,
                   help="network input size (default: the checkpoint config's)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--optimize", action="store_true",
                   help="also run the exporter's graph optimiser (onnxruntime optimises the graph when it loads it "
                        "anyway; on the paper-size model this pass did not finish in 20 min on 2 CPU cores)")
    p.add_argument("--verify_batch", type=positive_int, default=1,
                   help="batch of the first verification input with --dynamic (onnxruntime's memory grows with it: "
                        "the paper-size model at batch 2 needed more than 24 GB of CPU memory)")
    args = p.parse_args(argv)
    if problem := checkpoint_problem(args.ckpt):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from ..engine.export import export_onnx, verify_onnx
    from ..engine.inference import load_model

    try:
        model, cfg = load_model(args.ckpt, "cpu", impl="reference")  # one plain graph to export
    except (RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = args.size if args.size is not None else cfg.data.size
    try:
        export_onnx(model, args.out, size, dynamic=args.dynamic, optimize=args.optimize)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, network at {size}x{size}, "
          f"{'dynamic batch/height/width' if args.dynamic else f'fixed [1,3,{size},{size}]'})")
    worst = 0.0
    shapes = verification_shapes(size, args.dynamic, args.verify_batch)
    for (batch, height, width), diff in verify_onnx(model, args.out, size, shapes):
        print(f"  onnxruntime vs PyTorch, input [{batch},3,{height},{width}]: max |probability difference| {diff:.2e}")
        worst = max(worst, diff)
    if worst > TOLERANCE:
        print(f"error: the exported model differs from PyTorch by {worst:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0
