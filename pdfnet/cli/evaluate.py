"""Evaluate DIS predictions with the standard metrics (maxF, meanF, adpF, wF, MAE, Sm, meanEm, maxEm, adpEm, HCE).
``pdfnet eval`` = ``python evaluate.py``.

Saved maps of any method, matched to the GT by file stem:
  pdfnet eval --pred_dir results/DIS-TE1 --gt_dir DIS5K/DIS-TE1/gt --json te1.json

Our model (a .pth, an official checkpoint, a save_pretrained folder or a hub id) on a DIS-5K split, with
pseudo-depth maps cached in <split>/depth (pdfnet depth), or computed on the fly with --depth_model large:
  pdfnet eval --ckpt best.pth --split DIS-TE1 --data_root DIS5K [--tta] [--save_dir preds/]
  --split also takes DIS-VD, DIS-TE (the four test splits and their overall) and all.

Metric conventions are PySODMetrics' (HCE: the official DIS definition); ``maxF (mean-PR)`` is the official PDFNet
protocol, reported separately. Exit status is non-zero when any image fails; the JSON is then not written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from ..data.datasets import DEPTH_HINT, DatasetError, check_root, discover, evaluation_depth_folder, validate_samples
from ..data.io import (
    ImageReadError,
    atomic_write_bytes,
    list_images,
    probs_to_u8,
    read_gray_u8,
    writable_folder_problem,
    write_png,
)
from ..metrics import Evaluator
from ..metrics.report import PAPER_METHODS, TABLE_FORMATS, format_table
from .common import (
    CHECKPOINT_HELP,
    GENERATOR_HELP,
    add_device_argument,
    add_max_pixels_argument,
    apply_max_pixels,
    checkpoint_problem,
    configure_inference_backends,
    make_parser,
    model_size,
    positive_int,
    print_failures,
)

TEST_SPLITS = ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
OFFLINE_DEPTH = ("or compute the maps where the model is (`pdfnet depth`), copy them into each split's folder "
                 "and pass --depth_dir NAME")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = make_parser(__doc__, prog)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred_dir", type=Path, help="folder of predicted maps (8-bit images)")
    src.add_argument("--ckpt", nargs="+", help=f"{CHECKPOINT_HELP}; several, or a run directory (its *.pth files), "
                     "give one table row each")
    p.add_argument("--gt_dir", type=Path, help="folder of GT masks (with --pred_dir)")
    p.add_argument("--allow_missing", action="store_true",
                   help="evaluate the maps present in both folders instead of failing on missing/extra files")
    p.add_argument("--split", help="DIS-VD, DIS-TE1..4, DIS-TE or all (with --ckpt)")
    p.add_argument("--data_root", type=Path, default=None, help="DIS-5K root (default: the checkpoint config's)")
    p.add_argument("--depth_dir", default=None, help="depth folder name inside a split (default: config's)")
    p.add_argument("--depth_model", default=None,
                   help="compute depth for splits without cached maps: " + GENERATOR_HELP + "; for splits "
                        "without cached maps")
    p.add_argument("--depth_models", nargs="+", default=None, metavar="GENERATOR",
                   help="the paper's depth ablation without retraining: every --ckpt once per depth generator (one "
                        "table row each; names as --depth_model); maps are computed once and cached in "
                        "<split>/depth_<generator>, so a rerun only evaluates (needs --data_root)")
    p.add_argument("--size", type=model_size, default=None, help="model input size (default: the checkpoint config's)")
    p.add_argument("--tta", action="store_true", default=None,
                   help="flip x scales {0.75, 1, 1.25}, as the official evaluation")
    p.add_argument("--half", action="store_true", default=None, help="bf16 autocast (fp16 on GPUs without bf16)")
    p.add_argument("--tile", action="store_true", default=None,
                   help="tiled high-resolution inference (global pass + full-resolution tiles) for large images")
    p.add_argument("--batch_size", type=positive_int, default=None, help="images per forward pass (default: config's)")
    p.add_argument("--save_dir", type=Path, default=None, help="also save the predicted maps here (per split)")
    add_device_argument(p, inference=True)
    p.add_argument("--json", type=Path, default=None, help="write metrics, image count and per-image values")
    p.add_argument("--table", choices=TABLE_FORMATS, default="plain",
                   help="md (markdown) or latex: with the paper's PDFNet numbers (every metric it reports) beside ours")
    p.add_argument("--compare", nargs="+", default=[], choices=PAPER_METHODS, metavar="METHOD",
                   help=f"also the paper's rows of these methods ({', '.join(PAPER_METHODS)})")
    p.add_argument("--no_hce", action="store_true", help="skip HCE (the slowest metric)")
    # A str, not a Path: Path("") is the current folder (and truthy), so '' would have cached into it.
    p.add_argument("--hce_cache", default=str(Path.home() / ".cache" / "pdfnet" / "hce_skeletons"),
                   help="GT skeleton cache, keyed by mask content ('' to disable)")
    p.add_argument("--workers", type=int, default=1, help="processes for the metrics (--pred_dir)")
    add_max_pixels_argument(p)
    args = p.parse_args(argv)
    apply_max_pixels(args)
    if args.json is not None and args.json.is_dir():
        p.error(f"--json {args.json} is a folder; name the file to write")
    # Checked before any work: an unwritable output would otherwise lose every result after the work was done.
    for flag, folder in (("--json", args.json.parent if args.json else None), ("--save_dir", args.save_dir)):
        if folder is not None and (problem := writable_folder_problem(folder)):
            p.error(f"{flag}: {problem}")
    if args.pred_dir and not args.gt_dir:
        p.error("--pred_dir needs --gt_dir")
    if args.ckpt and not args.split:
        p.error("--ckpt needs --split")
    for ckpt in args.ckpt or []:
        if problem := checkpoint_problem(ckpt):
            p.error(problem)
    if args.depth_models and (args.depth_dir or args.depth_model or not args.ckpt or not args.data_root):
        p.error("--depth_models takes --ckpt and --data_root, and names every depth source itself (no --depth_dir "
                "or --depth_model)")
    return args


def split_names(split: str) -> list[str]:
    """``--split`` -> the split folders it names: DIS-TE = DIS-TE1..4, all = DIS-VD and DIS-TE1..4."""
    return {"DIS-TE": list(TEST_SPLITS), "all": ["DIS-VD", *TEST_SPLITS]}.get(split, [split])


def generator_folder(generator: str) -> str:
    """Where a generator's maps are cached inside a split: depth_large, depth_v1-small, depth_owner_model..."""
    return "depth_" + re.sub(r"[^A-Za-z0-9._-]+", "_", generator.strip("/")).strip("_")


def cache_generator_maps(args: argparse.Namespace, generator: str, ctx, device) -> str:
    """Compute the maps of ``generator`` that are not yet cached, for every split evaluated (sharded under
    torchrun, as ``pdfnet depth``); returns the folder name."""
    from .depth import compute_maps, depth_jobs

    folder = generator_folder(generator)
    splits = split_names(args.split)
    jobs = depth_jobs(args.data_root, splits, folder, None)
    todo = [(src, dst) for src, dst in jobs if not dst.exists()]
    options = argparse.Namespace(model=generator, model_size=None, input_size=518, batch_size=1)
    if compute_maps(options, len(jobs), todo, len(splits), ctx, device, flag="--depth_models", folder_flag=None) != 0:
        raise RuntimeError(f"depth generator {generator}: some maps could not be made (listed above)")
    return folder


def new_evaluator(args: argparse.Namespace, workers: int = 1) -> Evaluator:
    """An Evaluator with the command line's HCE settings."""
    return Evaluator(hce=not args.no_hce, skeleton_cache=args.hce_cache or None,
                     workers=workers)


def match_by_stem(pred_dir: Path, gt_dir: Path, allow_missing: bool) -> list[tuple[str, Path, Path]]:
    gts, preds = list_images(gt_dir), list_images(pred_dir)
    if not gts:
        raise ValueError(f"no GT masks in {gt_dir}")
    missing, extra = sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))
    if (missing or extra) and not allow_missing:
        lines = [f"predictions and GT do not match ({len(missing)} missing, {len(extra)} extra):"]
        lines += [f"  missing prediction: {name}" for name in missing[:30]]
        lines += [f"  prediction without GT: {name}" for name in extra[:30]]
        lines.append("  (use --allow_missing to evaluate the common files only)")
        raise ValueError("\n".join(lines))
    for name in missing:
        print(f"warning: no prediction for {name}; skipped (--allow_missing)", file=sys.stderr)
    common = sorted(set(gts) & set(preds))
    if not common:
        raise ValueError(f"no prediction in {pred_dir} matches a GT file stem in {gt_dir}")
    return [(name, preds[name], gts[name]) for name in common]


def evaluate_folders(args: argparse.Namespace) -> tuple[dict, list[str]]:
    pairs = match_by_stem(args.pred_dir, args.gt_dir, args.allow_missing)
    evaluator = new_evaluator(args, workers=args.workers)
    failures: list[str] = []

    def readable():
        for name, pred_path, gt_path in pairs:
            try:
                yield name, read_gray_u8(pred_path), read_gray_u8(gt_path)
            except ImageReadError as err:
                failures.append(f"{name}: {err}")

    with tqdm(total=len(pairs), desc="evaluating", unit="img") as bar:
        evaluator.update_many(readable(), progress=lambda _: bar.update())
    if failures:
        return {}, failures
    name = args.gt_dir.parent.name if args.gt_dir.name == "gt" else args.pred_dir.name  # e.g. DIS-TE1
    return {name: evaluator.compute()}, failures


def expand_checkpoints(sources: list[str]) -> list[str]:
    """``--ckpt`` values -> checkpoints: a training run directory stands for its ``*.pth`` files (best.pth first,
    then last.pth, then the rest by name); files, save_pretrained folders and hub ids stand for themselves."""
    out: list[str] = []
    for source in sources:
        folder = Path(source)
        if folder.is_dir() and not (folder / "config.json").is_file():
            found = sorted(folder.glob("*.pth"), key=lambda p: (p.name != "best.pth", p.name != "last.pth", p.name))
            if not found:
                raise ValueError(f"--ckpt {folder}: a folder with no *.pth checkpoint and no config.json")
            out += [str(p) for p in found]
        else:
            out.append(source)
    return out


def evaluate_checkpoint(args: argparse.Namespace, ckpt: str, ctx, device, several: bool = False
                        ) -> tuple[dict, list[str]]:
    """Metrics of one checkpoint on ``args.split``. Under torchrun each rank predicts its share of every split and
    rank 0 combines the per-image statistics in the one-process order, so the numbers equal a single process's."""
    from ..data.io import read_depth, read_rgb_u8
    from ..engine.distributed import gather_objects, shard
    from ..engine.inference import load_model, model_device
    from ..engine.predictor import Predictor

    model, cfg = load_model(ckpt, device)
    # Command-line values override the checkpoint config's data/eval settings.
    predictor = Predictor.from_config(model, cfg, size=args.size, tta=args.tta, half=args.half, tile=args.tile,
                                      batch_size=args.batch_size)
    save_dir = args.save_dir  # never the loaded config's eval.save_dir: a checkpoint does not choose where we write
    if save_dir and several:
        save_dir = save_dir / _method_label(ckpt).replace("/", "_")  # run_a/best.pth -> run_a_best: no collisions
    hint = "pass --data_root DIR" + ("" if args.data_root else f"; the checkpoint's config says {cfg.data.root}")
    root = check_root(args.data_root or cfg.data.root, hint)
    splits = split_names(args.split)
    estimator = None
    if args.depth_model:
        from ..depth import DepthEstimator

        estimator = DepthEstimator(args.depth_model, device=model_device(model), alternative=OFFLINE_DEPTH)
    results, failures, merged = {}, [], {}
    cfg.data.root = str(root)
    plan = {}
    for split in splits:  # every split found and checked before any inference: a missing one costs no work
        depth_dir = args.depth_dir or evaluation_depth_folder(cfg.data, split)
        cached = (Path(root) / split / depth_dir).is_dir()
        plan[split] = discover(root, split, cfg.data.layout, image_dir=cfg.data.image_dir,
                               mask_dir=cfg.data.mask_dir, depth_dir=depth_dir, need_depth=cached or estimator is None,
                               depth_hint=f"{DEPTH_HINT}, or compute depth on the fly with --depth_model large")
        validate_samples(plan[split])  # every unreadable file or size mismatch
    for split, samples in plan.items():
        mine = shard(samples, ctx)
        evaluator = new_evaluator(args)
        bar = tqdm(total=len(mine), desc=split, unit="img", disable=not ctx.is_main)
        for start in range(0, len(mine), predictor.images_per_call):
            batch = mine[start:start + predictor.images_per_call]
            chunk, images, depths, gts = [], [], [], []
            for sample in batch:
                try:
                    gt, image = read_gray_u8(sample.mask), read_rgb_u8(sample.image)
                    depth = read_depth(sample.depth) if sample.depth else estimator([image])[0]
                except ImageReadError as err:
                    failures.append(f"{split}/{sample.name}: {err}")
                    continue
                chunk.append(sample)
                images.append(image)
                depths.append(depth)
                gts.append(gt)
            for sample, gt, probs in zip(chunk, gts, predictor(images, depths) if images else []):
                pred = probs_to_u8(probs)
                if save_dir:
                    write_png(save_dir / split / f"{sample.name}.png", pred)
                evaluator.update(pred, gt, sample.name)
            bar.update(len(batch))
        bar.close()
        parts = gather_objects(ctx, (evaluator.statistics(), failures))
        failures = [line for _, lines in parts for line in lines]
        if failures:
            return {}, sorted(set(failures))
        stats = {name: s for part, _ in parts for name, s in part.items()}
        merged[split] = [(sample.name, stats[sample.name]) for sample in samples]  # the one-process order
    if not ctx.is_main:
        return {}, []
    for split, pairs in merged.items():
        evaluator = new_evaluator(args)
        for name, s in pairs:
            evaluator.add_statistics(name, s)
        results[split] = evaluator.compute()
    if len(splits) > 1:
        overall = new_evaluator(args)
        for split in TEST_SPLITS:
            for name, s in merged.get(split, []):
                overall.add_statistics(f"{split}/{name}", s)
        if len(overall):
            results["DIS-TE"] = overall.compute()
    return results, failures


def evaluate_checkpoints(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """{checkpoint: {split: result}} for every ``--ckpt`` (rank 0 only under torchrun), and the failures."""
    from ..engine.distributed import init_distributed, shutdown

    ctx, device = init_distributed(args.device)
    configure_inference_backends(args, device)
    try:
        out: dict[str, dict] = {}
        ckpts = expand_checkpoints(args.ckpt)
        labels = [_method_label(c) for c in ckpts]
        clashes = sorted({label for label in labels if labels.count(label) > 1})
        if clashes:  # their rows (and --save_dir folders) would be indistinguishable: the second would overwrite
            raise ValueError(f"--ckpt: several checkpoints are labelled {', '.join(clashes)} (parent folder/file "
                             "name); rename or copy one")
        sources = [None] if not args.depth_models else args.depth_models
        save_dir = args.save_dir
        for ckpt in ckpts:
            for generator in sources:
                if generator is not None:  # the depth ablation: this generator's cached maps
                    args.depth_dir = cache_generator_maps(args, generator, ctx, device)
                    args.save_dir = save_dir / generator_folder(generator) if save_dir else None
                results, failures = evaluate_checkpoint(args, ckpt, ctx, device, several=len(ckpts) > 1)
                if failures:  # every rank has the gathered list and stops here; rank 0 reports it
                    return {}, (failures if ctx.is_main else [])
                out[ckpt if generator is None else f"{ckpt}#depth={generator}"] = results
        return (out if ctx.is_main else {}), []
    finally:
        shutdown(ctx)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        if args.ckpt:
            by_ckpt, failures = evaluate_checkpoints(args)
            if not by_ckpt and not failures:
                return 0  # a rank other than 0 under torchrun: rank 0 reports
        else:
            results, failures = evaluate_folders(args)
            by_ckpt = {"": results}
    except (ValueError, OSError, DatasetError, RuntimeError) as err:  # OSError: an output folder that is not writable
        print(f"error: {err}", file=sys.stderr)
        return 2
    if failures:
        print_failures(failures, f"{len(failures)} image(s) failed; no results written:")
        return 1
    several = len(by_ckpt) > 1 or bool(getattr(args, "depth_models", None))  # ablation rows: per generator
    table = {((split, _method_label(ckpt)) if several else split): r["metrics"]
             for ckpt, results in by_ckpt.items() for split, r in results.items()}
    print()
    print(format_table(table, args.table, with_paper=args.table != "plain", compare=tuple(args.compare)))
    if args.json:
        payloads = {ckpt: (results[next(iter(results))] if len(results) == 1 else {"splits": results})
                    for ckpt, results in by_ckpt.items()}
        payload = {"checkpoints": payloads} if several else next(iter(payloads.values()))
        atomic_write_bytes(args.json, json.dumps(payload, indent=1).encode("utf-8"))
        print(f"\nwrote {args.json}")
    return 0


def _method_label(ckpt: str) -> str:
    """A checkpoint's row label: run/best.pth -> run/best (parent folder kept: runs often share file names); a
    depth-ablation row is its generator's name and the checkpoint's label."""
    if "#depth=" in ckpt:
        ckpt, generator = ckpt.split("#depth=", 1)
        return f"{generator} ({_method_label(ckpt)})"
    path = Path(ckpt)
    return f"{path.parent.name}/{path.stem}" if path.suffix == ".pth" and path.parent.name else path.name or ckpt
