"""Web demo (Gradio): upload an image, get the mask, the cut-out (RGBA, downloadable) and the pseudo-depth side by
side, with TTA and tiling switches. ``pdfnet demo`` = ``python scripts/demo.py``; needs pip install -e ".[demo]".

  pdfnet demo --ckpt best.pth                                   # http://127.0.0.1:7860, Depth Anything V2 large
  pdfnet demo --ckpt owner/pdfnet-dis5k --depth_model small --port 8080 --device cuda
  pdfnet demo --ckpt best.pth --host 0.0.0.0                    # reachable from other machines

Runs on CPU or GPU. Examples: the images of --examples (default: ../shared/data/dis5k-samples when present).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import (
    add_checkpoint_argument,
    add_device_argument,
    add_max_pixels_argument,
    apply_max_pixels,
    checkpoint_problem,
    configure_inference_backends,
    make_parser,
    whole_number,
)

DEFAULT_EXAMPLES = Path("..") / "shared" / "data" / "dis5k-samples"


def port_number(text: str) -> int:
    port = whole_number(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = make_parser(__doc__, prog)
    add_checkpoint_argument(p)
    p.add_argument("--depth_model", default="large",
                   help="Depth Anything V2 for the pseudo-depth: small, base, large, a folder or a hub id; none = no "
                        "depth model (offline): every upload brings its own depth map")
    add_device_argument(p, inference=True)
    p.add_argument("--half", action="store_true", default=None, help="bf16 autocast (fp16 on GPUs without bf16)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=port_number, default=7860, help="port to listen on (1-65535)")
    add_max_pixels_argument(p)
    # A str, not a Path: Path("") is the current folder, and '' would have shown its images as examples.
    p.add_argument("--examples", default=str(DEFAULT_EXAMPLES),
                   help="folder of example images, or of splits with im/ folders ('' = none)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    apply_max_pixels(args)
    if problem := checkpoint_problem(args.ckpt):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the demo needs Gradio: pip install -e ".[demo]"', file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo, _ = build(args)
    if demo is None:
        return 2
    print(f"PDFNet demo on http://{args.host}:{args.port} (Ctrl-C stops it)")
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def shown_name(source: str) -> str:
    """What the page calls a checkpoint or depth model: a file or folder by its name, a hub id or preset as given."""
    return Path(source).name if Path(os.path.expanduser(source)).exists() else source


def build(args: argparse.Namespace):
    """(Gradio Blocks, Segmenter) for parsed arguments, or (None, None) after printing the error."""
    from ..depth import DepthEstimator
    from ..engine.demo import Segmenter, build_demo, example_images
    from ..engine.inference import load_model, model_device

    try:
        model, cfg = load_model(args.ckpt, args.device)
        configure_inference_backends(args, model_device(model))
        estimator = None if args.depth_model == "none" else DepthEstimator(
            args.depth_model, device=model_device(model),
            alternative="or start the demo with --depth_model none and upload each image's depth map with it")
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None, None
    segmenter = Segmenter(model, cfg, estimator, half=args.half)
    # Names, not paths: the page is for visitors, who need not learn the layout of the server's disk.
    description = (f"Model `{shown_name(args.ckpt)}` ({cfg.model.variant}, input {cfg.data.size}²), depth "
                   f"`{shown_name(args.depth_model)}`, device `{model_device(model).type}`.")
    return build_demo(segmenter, example_images(args.examples), description), segmenter
