"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def print_failures(failures: list[str], header: str) -> None:
    """Report per-file failures on stderr: ``header`` on its own line, then one indented line per failure."""
    print(f"\n{header}", file=sys.stderr)
    for line in failures:
        print(f"  {line}", file=sys.stderr)


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type when the message is empty, the first line of the message else."""
    text = next(iter(str(err).strip().splitlines()), "") or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def run_batch(fn: Callable[[list], Sequence], items: list, names: list[str]) -> list[tuple[str, object, str | None]]:
    """``fn(items)`` -> one result per item, as [(name, result, None)]; when the batch fails (an image too big for
    memory, say), each item is tried alone, so that one bad image costs only itself: [(name, None, error)]."""
    try:
        return [(name, result, None) for name, result in zip(names, fn(items), strict=True)]
    except (RuntimeError, MemoryError, ValueError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if len(items) == 1:
            return [(names[0], None, one_line(err))]
    return [row for name, item in zip(names, items) for row in run_batch(fn, [item], [name])]


def make_parser(doc: str | None, prog: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the command's docstring, kept as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_opt_argument(parser: argparse.ArgumentParser) -> None:
    """``--opt KEY=VALUE ...``: both ``--opt a=1 --opt b=2`` and ``--opt a=1 b=2`` give ``["a=1", "b=2"]``."""
    parser.add_argument("--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides (YAML values), e.g. --opt train.epochs=5 data.size=512; repeatable")


def checkpoint_problem(source: str | os.PathLike) -> str | None:
    """Why ``source`` cannot be a checkpoint (no such file or folder, and not a hub id), or None; checked before
    torch is imported so that a typo is reported at once."""
    from ..hub_files import looks_like_hub_id

    text = os.path.expanduser(str(source))
    if Path(text).exists() or looks_like_hub_id(text):
        return None
    return (f"checkpoint not found: {text} (expected a .pth file, an official checkpoint, a save_pretrained folder "
            "or a hub id owner/name)")


GENERATOR_HELP = ("the depth generator: small/base/large (Depth Anything V2 = the paper's PDFNet-S/B/L, also S/B/L), "
                  "v1-large, dpt-large, zoedepth, depth-pro, prompt-depth-anything, the hub id of any transformers "
                  "depth model, or a folder")
CHECKPOINT_HELP = "our .pth, an official checkpoint, a save_pretrained folder or a hub id"


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--ckpt``, as every command that loads a model takes it."""
    parser.add_argument("--ckpt", required=True, help=CHECKPOINT_HELP)


def add_device_argument(parser: argparse.ArgumentParser, inference: bool = False) -> None:
    """``--device``, as every command that runs a model takes it (under torchrun: cuda:LOCAL_RANK); for the PDFNet
    inference commands also ``--no_tf32``."""
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    if inference:
        parser.add_argument("--no_tf32", action="store_true",
                            help="exact float32 matmuls and convolutions on CUDA (TF32 and cuDNN autotuning are on by "
                                 "default, as for training; turn TF32 off for parity checks)")


def configure_inference_backends(args: argparse.Namespace, device) -> None:
    """cuDNN autotuning (the model runs at one size) and TF32 unless ``--no_tf32``, on CUDA only."""
    from ..device import configure_cuda_backends

    configure_cuda_backends(device, tf32=not args.no_tf32)


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """``--max_pixels``: the largest image decoded (checked from the header first; see pdfnet.data.io)."""
    from ..data.io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV

    parser.add_argument("--max_pixels", type=positive_int, default=None,
                        help=f"refuse images with more pixels, read from the header before decoding (default "
                             f"{DEFAULT_MAX_PIXELS:,}, or ${MAX_PIXELS_ENV})")


def apply_max_pixels(args: argparse.Namespace) -> None:
    from ..data.io import set_max_pixels

    set_max_pixels(args.max_pixels)


def whole_number(text: str) -> int:
    """``text`` as an int, or the argparse error that makes a bad value an exit-2 argument error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (bad values are exit-2 argument errors)."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def model_size(text: str) -> int:
    """argparse type of ``--size``: the model's input side, a multiple of 64 from 128 to data.size's upper bound."""
    from ..config import MAX_SIZE as upper

    value = whole_number(text)
    if value % 64 or not 128 <= value <= upper:
        raise argparse.ArgumentTypeError(f"must be a multiple of 64 from 128 to {upper} (the model's input), got "
                                         f"{value}")
    return value
