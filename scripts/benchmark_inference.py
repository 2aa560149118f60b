#!/usr/bin/env python
"""Inference latency and peak memory of PDFNet, ours and (optionally) the official implementation side by side.

Each implementation runs in its own fresh process so that peak memory is its own. Both load the same weights (an
official-format state dict written once to a temp file) and see the same inputs; the outputs are compared.

  python scripts/benchmark_inference.py --size 1024                          # ours only, CPU float32
  python scripts/benchmark_inference.py --size 1024 --official_dir /tmp/PDFNet  # ours vs the official code
  python scripts/benchmark_inference.py --device cuda --dtype bf16 --batch 4 --json out.json
  python scripts/benchmark_inference.py --dtype bf16 --agreement ../shared/data/dis5k-samples/DIS-TE1/im

The official code is never part of this repository: clone github.com/Tennine2077/PDFNet somewhere (it needs einops;
matplotlib is stubbed if absent) and pass its folder. Peak memory is CUDA max-allocated on GPU, and the process
peak RSS on CPU (reported for the whole process, and for the inference phase alone after the weights are loaded).
The official code always runs in float32 (the precision it is written for): with --dtype bf16 the ratios are ours in
bf16 against the official float32, and the logit difference includes the bf16 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_code import build_official_model, check_official_dir  # noqa: E402


def _rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _make_inputs(size: int, batch: int, seed: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    # Smooth random images and depth: realistic value ranges, deterministic.
    img = F.interpolate(torch.rand(batch, 3, 16, 16, generator=g), size=(size, size), mode="bilinear")
    img = (img - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    depth = F.interpolate(torch.rand(batch, 1, 8, 8, generator=g), size=(size, size), mode="bilinear")
    return img, depth


def _our_model(backbone: str, weights: str | None, impl: str, device):
    """Our model as benchmarked, in the implementation ``impl`` (model.impl) picks on ``device``: the shared
    official-format weights when they exist, else a seeded random init."""
    import torch

    from pdfnet.build import build_model
    from pdfnet.config import ModelConfig
    from pdfnet.models.official import load_official

    if weights and Path(weights).exists():
        reference = load_official(weights)
        cfg = ModelConfig(variant=reference.variant, depth_head=reference.has_depth_head, impl=impl)
        return build_model(cfg, device, reference.state_dict())
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, emb_dim=128 if backbone.startswith("swin_base") else 32, depth_head=False,
                      impl=impl)
    return build_model(cfg, device)


def run_child(opts: argparse.Namespace) -> dict:
    import torch

    from pdfnet.device import cpu_emulates_bf16

    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    t0 = time.perf_counter()
    if opts.impl == "official":
        torch.manual_seed(0)
        model = build_official_model(opts.official_dir)
        if opts.weights and Path(opts.weights).exists():
            model.load_state_dict(torch.load(opts.weights, map_location="cpu", weights_only=True), strict=True)
        elif opts.weights:
            torch.save(model.state_dict(), opts.weights)  # the first child writes the weights both will use
        model = model.to(device).eval()

        def infer(img, depth):
            return model.inference(img, depth)[1]
    else:
        model = _our_model(opts.backbone, opts.weights, opts.model_impl, device).eval()

        def infer(img, depth):
            return model(img, depth)[0]
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mib("VmRSS")
    img, depth = (t.to(device) for t in _make_inputs(opts.size, opts.batch, opts.seed))
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.dtype)
    if autocast_dtype is torch.bfloat16 and cpu_emulates_bf16(device):
        autocast_dtype = None  # float32, as --half runs there
    times = []
    peak_reset = _reset_peak_rss() if device.type == "cpu" else False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                enabled=autocast_dtype is not None):
        for i in range(opts.warmup + opts.runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = infer(img, depth)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= opts.warmup:
                times.append(time.perf_counter() - t)
    result = {
        "impl": opts.impl, "size": opts.size, "batch": opts.batch, "dtype": opts.dtype, "device": str(device),
        "compute_dtype": str(autocast_dtype or torch.float32).removeprefix("torch."),
        "threads": opts.threads, "load_s": load_s, "times_s": times, "median_s": statistics.median(times),
        "per_image_s": statistics.median(times) / opts.batch,
    }
    if device.type == "cuda":
        result["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_kind"] = "cuda_max_allocated"
    else:
        result["rss_after_load_mib"] = rss_loaded
        result["peak_mem_mib"] = _rss_mib("VmHWM") if peak_reset else float("nan")
        result["peak_kind"] = "process_peak_rss_during_inference"
        import resource

        result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if opts.impl == "ours" and opts.mm_size:
        # The work, and what the machine sustains on a large matmul in the same dtype and thread count.
        from pdfnet.engine.profiling import count_flops, matmul_peak_gflops

        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                    enabled=autocast_dtype is not None):
            result["gflop_per_image"] = count_flops(lambda: infer(img, depth)) / 1e9 / opts.batch
        result["matmul_peak_gflops"] = matmul_peak_gflops(device, autocast_dtype or torch.float32, opts.mm_size)
    if opts.out_npy:
        import numpy as np

        np.save(opts.out_npy, out.float().cpu().numpy())
    return result


def _agreement(opts: argparse.Namespace, weights: str | None) -> list[dict]:
    """--dtype against float32 on real images, with the benchmark's weights (random: a check of numerics, not of
    accuracy). The depth input is the image's luminance (no depth model runs here); both precisions see the same."""
    import numpy as np
    import torch

    from pdfnet.data.io import list_images, read_rgb_u8
    from pdfnet.device import half_dtype
    from pdfnet.engine.inference import half_precision_agreement

    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    model = _our_model(opts.backbone, weights, opts.model_impl, device).eval()
    if half_dtype(device) != {"bf16": torch.bfloat16, "fp16": torch.float16}[opts.dtype]:
        print(f"note: --half on {device} runs {half_dtype(device)}, not {opts.dtype} (see pdfnet.device)")
    paths = sorted(list_images(opts.agreement).items())[:opts.agreement_images]
    images = [read_rgb_u8(path) for _, path in paths]
    depths = [im.astype(np.float32).mean(axis=2) / 255 for im in images]
    rows = [{"image": name, **r} for (name, _), r in
            zip(paths, half_precision_agreement(model, images, depths, opts.size))]
    print(f"\n{opts.dtype} vs float32 on {len(rows)} images of {opts.agreement} at {opts.size}² (random weights, "
          "luminance as depth)")
    print(f"{'image':60s} {'max |Δprob|':>12s} {'IoU@0.5':>8s}")
    for r in rows:
        print(f"{r['image'][:60]:60s} {r['max_abs_prob_diff']:12.2e} {r['mask_iou_at_0.5']:8.4f}")
    print(f"worst: max |Δprob| {max(r['max_abs_prob_diff'] for r in rows):.2e}, "
          f"IoU {min(r['mask_iou_at_0.5'] for r in rows):.4f}")
    return rows


def time_depth(opts: argparse.Namespace, workdir: Path, segmentation_s: float | None) -> dict:
    """Seconds per photo of the depth generator ``opts.depth_model`` on one --size² photo (median of --runs after
    --warmup, in --dtype where the device runs it natively); with ``segmentation_s`` also the total and images/s,
    beside the paper's FPS for its three generators (RTX 4090, depth included)."""
    import numpy as np
    import torch

    from pdfnet.depth import DepthEstimator
    from pdfnet.depth.architectures import DEPTH_ANYTHING_V2, save_random_depth_anything_v2
    from pdfnet.depth.ids import PAPER_FPS, PRESETS

    torch.set_num_threads(opts.threads)
    name = PRESETS.get(opts.depth_model.removeprefix("PDFNet-"), opts.depth_model)
    source = name
    if name in DEPTH_ANYTHING_V2:  # the real architecture, random weights: the time does not depend on them
        source = str(workdir / f"depth_anything_v2_{name}_random")
        if not Path(source).is_dir():
            save_random_depth_anything_v2(name, source)
    estimator = DepthEstimator(source, device=opts.device, half=opts.dtype != "float32")
    photo = np.random.default_rng(opts.seed).integers(0, 256, (opts.size, opts.size, 3), dtype=np.uint8)
    times = []
    for i in range(opts.warmup + opts.runs):
        if estimator.device.type == "cuda":
            torch.cuda.synchronize(estimator.device)
        t = time.perf_counter()
        estimator([photo])
        if estimator.device.type == "cuda":
            torch.cuda.synchronize(estimator.device)
        if i >= opts.warmup:
            times.append(time.perf_counter() - t)
    row = {"depth_model": name, "parameters_m": round(sum(p.numel() for p in estimator.model.parameters()) / 1e6, 1),
           "depth_s": statistics.median(times)}
    line = f"depth {name}: {row['parameters_m']}M parameters, {row['depth_s']:.2f} s per {opts.size}² photo"
    if segmentation_s is not None:
        row.update(segmentation_s=segmentation_s, total_s=segmentation_s + row["depth_s"])
        row["images_per_s"] = 1 / row["total_s"]
        line += (f"; segmentation {segmentation_s:.2f} s; together {row['total_s']:.2f} s = "
                 f"{row['images_per_s']:.3f} images/s")
    if name in PAPER_FPS:
        row["paper_fps_rtx4090"] = PAPER_FPS[name]
        line += f" (paper, RTX 4090, depth included: {PAPER_FPS[name]} images/s)"
    print(line)
    return row


def _spawn(impl: str, opts: argparse.Namespace, workdir: Path, weights: str | None) -> dict:
    res_path, npy = workdir / f"{impl}.json", workdir / f"{impl}.npy"
    dtype = "float32" if impl == "official" else opts.dtype  # the official code runs float32 only
    cmd = [sys.executable, __file__, "--_child", impl, "--size", str(opts.size), "--batch", str(opts.batch),
           "--dtype", dtype, "--device", opts.device, "--runs", str(opts.runs), "--warmup", str(opts.warmup),
           "--threads", str(opts.threads), "--seed", str(opts.seed), "--_result", str(res_path),
           "--_out_npy", str(npy), "--backbone", opts.backbone, "--mm_size", str(opts.mm_size),
           "--model_impl", opts.model_impl]
    if opts.official_dir:
        cmd += ["--official_dir", opts.official_dir]
    if weights:
        cmd += ["--_weights", weights]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0 or not res_path.exists():
        raise SystemExit(f"benchmark of {impl} failed (exit {proc.returncode})")
    result = json.loads(res_path.read_text())
    result["_npy"] = str(npy)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="square input size (multiple of 64)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=("float32", "bf16", "fp16"), default="float32", help="autocast dtype")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="swin_base_patch4_window12_384",
                   help="our model's backbone when run alone (the comparison always uses the paper's Swin-B)")
    p.add_argument("--model_impl", choices=("auto", "reference", "lean"), default="auto",
                   help="our model's implementation (model.impl; auto: lean on CPU, reference on GPUs)")
    p.add_argument("--official_dir", default="", help="checkout of the official PDFNet code to compare against")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--mm_size", type=int, default=4096,
                   help="side of the square matmul that measures the machine's peak (0: skip FLOPs and peak)")
    p.add_argument("--workdir", default="", help="keep weights and results here; a matching official measurement "
                   "found there is reused instead of re-run (it takes minutes on CPU)")
    p.add_argument("--agreement", default="", help="also compare --dtype (bf16/fp16) with float32 on the images in "
                   "this folder: max |Δprob| and mask IoU at 0.5 per image, at --size")
    p.add_argument("--agreement_images", type=int, default=6, help="how many images of --agreement (sorted by name)")
    p.add_argument("--depth_model", default="",
                   help="also time a depth generator on one --size² photo and report depth, segmentation and both "
                        "together: small/base/large (or S/B/L: the paper's PDFNet-S/B/L) time Depth Anything V2's real "
                        "architecture with random weights (nothing to download); any other name, hub id or folder "
                        "loads that model")
    p.add_argument("--depth_only", action="store_true", help="with --depth_model: time the depth generator only")
    p.add_argument("--_child", dest="impl", default="", help=argparse.SUPPRESS)
    p.add_argument("--_result", dest="result", default="", help=argparse.SUPPRESS)
    p.add_argument("--_out_npy", dest="out_npy", default="", help=argparse.SUPPRESS)
    p.add_argument("--_weights", dest="weights", default="", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.size % 64:
        p.error(f"--size must be a multiple of 64, got {opts.size}")
    if opts.official_dir and opts.backbone != "swin_base_patch4_window12_384":
        p.error("--official_dir compares the paper's model: leave --backbone at its default")
    if opts.official_dir and (problem := check_official_dir(opts.official_dir)):
        p.error(problem)
    if opts.agreement and opts.dtype == "float32":
        p.error("--agreement compares a half-precision --dtype (bf16 or fp16) with float32")
    if opts.agreement and not Path(opts.agreement).is_dir():
        p.error(f"--agreement {opts.agreement}: not a folder")

    if opts.depth_only and not opts.depth_model:
        p.error("--depth_only needs --depth_model")
    if opts.impl:  # child process
        Path(opts.result).write_text(json.dumps(run_child(opts)))
        return
    if opts.depth_only:
        with tempfile.TemporaryDirectory() as tmp:
            row = time_depth(opts, Path(opts.workdir or tmp), None)
        if opts.json:
            Path(opts.json).write_text(json.dumps({"end_to_end": row}, indent=2))
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        weights = None
        if opts.official_dir:
            weights = str(workdir / "official_weights.pth")
            cached = workdir / "official.json"
            wanted = {"size": opts.size, "batch": opts.batch, "device": opts.device, "threads": opts.threads,
                      "dtype": "float32"}  # the official code is always measured in float32
            if opts.workdir and cached.exists() and Path(weights).exists() and all(
                    json.loads(cached.read_text()).get(k) == v for k, v in wanted.items()):
                print(f"reusing the official measurement in {cached}")
                results.append({**json.loads(cached.read_text()), "_npy": str(workdir / "official.npy")})
            else:
                results.append(_spawn("official", opts, workdir, weights))  # also writes the shared weights
        results.append(_spawn("ours", opts, workdir, weights))
        import numpy as np

        print(f"\nPDFNet inference, {opts.size}x{opts.size}, batch {opts.batch}, {opts.dtype}, {opts.device}, "
              f"{opts.threads} threads, median of {opts.runs} after {opts.warmup} warm-up")
        work = results[-1].get("gflop_per_image")  # the model's FLOPs, counted on ours (the same network)
        peak = results[-1].get("matmul_peak_gflops")
        computed = results[-1].get("compute_dtype", opts.dtype)  # float32 where bf16 is not native on a CPU
        if opts.dtype == "bf16" and computed == "float32":
            print("note: this CPU has no native bfloat16 (AVX512-BF16/AMX): ours ran float32, as --half does")
        print(f"{'impl':10s} {'dtype':>8s} {'median s':>10s} {'s/image':>10s} {'peak MiB':>10s} {'GFLOP/s':>9s} "
              f"{'of mm peak':>10s}  peak kind")
        for r in results:
            rate = work / r["per_image_s"] if work else float("nan")
            same_dtype = r.get("compute_dtype", r["dtype"]) == computed  # the peak is in the dtype ours ran
            share = rate / peak if work and same_dtype else float("nan")
            if work:
                r["achieved_gflops"], r["fraction_of_matmul_peak"] = rate, share
            share_text = f"{share:10.1%}" if share == share else f"{'-':>10s}"  # no peak in another dtype
            print(f"{r['impl']:10s} {r['dtype']:>8s} {r['median_s']:10.2f} {r['per_image_s']:10.2f} "
                  f"{r['peak_mem_mib']:10.0f} {rate:9.1f} {share_text}  {r['peak_kind']}")
        if work:
            print(f"model: {work:.1f} GFLOP per image (torch.utils.flop_counter); this machine's {opts.mm_size}² "
                  f"matmul in {computed}: {peak:.1f} GFLOP/s")
        summary = {"results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]}
        if len(results) == 2:
            off, ours = results
            diff = float(np.abs(np.load(off["_npy"]) - np.load(ours["_npy"])).max())
            summary["time_ratio"] = ours["median_s"] / off["median_s"]
            summary["peak_mem_ratio"] = ours["peak_mem_mib"] / off["peak_mem_mib"]
            summary["max_abs_logit_diff"] = diff
            print(f"ratio ours/official: time {summary['time_ratio']:.2f}x, peak memory "
                  f"{summary['peak_mem_ratio']:.2f}x; max |logit diff| {diff:.2e}")
        if opts.depth_model:
            summary["end_to_end"] = time_depth(opts, workdir, results[-1]["per_image_s"])
        if opts.agreement:
            summary["agreement"] = _agreement(opts, weights)
        if opts.json:
            Path(opts.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
