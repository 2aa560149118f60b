"""The ``pdfnet`` console command: one subcommand per job, each the very code and flags of its script.

  pdfnet train   --config configs/dis5k.yaml            (= python train.py)
  pdfnet eval    --ckpt best.pth --split DIS-TE1          (= python evaluate.py)
  pdfnet predict --ckpt best.pth --input photos/ --output masks/ --depth_model large   (= scripts/predict.py)
  pdfnet depth   --data_root DIS5K                        (= scripts/prepare_depth.py)
  pdfnet export  --ckpt best.pth --out pdfnet.onnx        (= scripts/export_onnx.py)
  pdfnet convert PDFNet_Best.pth ours.pth                 (= scripts/convert_official.py)
  pdfnet demo    --ckpt best.pth                          (= scripts/web_demo.py; needs pip install -e ".[demo]")

Subcommand modules import torch only after their arguments are parsed, so ``--help`` and argument errors are quick.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from .common import print_failures

# subcommand -> (module under pdfnet.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (one process or torchrun); --resume auto continues a run"),
    "eval": ("evaluate", "DIS metrics for saved maps or for a checkpoint on DIS-5K splits"),
    "predict": ("predict", "masks, cut-outs or overlays for your own images"),
    "depth": ("depth", "pseudo-depth maps with Depth Anything V2 for a dataset"),
    "export": ("export", "ONNX export, checked against PyTorch with onnxruntime"),
    "convert": ("convert", "official PDFNet checkpoint -> our checkpoint and/or a Hugging Face Hub folder"),
    "demo": ("demo", "web demo (Gradio): upload an image, get mask, cut-out and depth"),
}


def usage() -> str:
    from .. import __version__

    width = max(map(len, COMMANDS))
    lines = [f"usage: pdfnet <command> [options]   (pdfnet {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "pdfnet <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``pdfnet <command> ...`` to ``pdfnet.cli.<module>.main``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"pdfnet {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"pdfnet: unknown command '{name}'{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    try:
        return module.main(argv[1:], prog=f"pdfnet {name}")
    except SystemExit as stop:  # argparse exits on --help / bad arguments
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)


def console() -> None:
    """Entry point of the ``pdfnet`` console script."""
    sys.exit(main())


__all__ = ["COMMANDS", "console", "main", "print_failures"]
