#!/usr/bin/env python
"""The GPU benchmark: ours beside the official code and beside the hardware's limit, in one run (<= 8 min on one GPU).

  python scripts/benchmark_gpu.py --official_dir /tmp/PDFNet --official_v1_dir /tmp/PDFNet-v2025.03 --out bench/
  python scripts/benchmark_gpu.py --device cpu --quick --out /tmp/bench       # every section, tiny model (CI)

Writes <out>/benchmark_gpu.json and <out>/benchmark_gpu.md, rewritten after every section (a run stopped by a time
limit keeps what it measured). Each section runs in its own process with a hard time limit (--limits). Sections:

  environment  GPU, memory, torch/CUDA, native bf16, the GPU's datasheet dense bf16/TF32 peaks (table below, with
               sources) and a large matmul measured now
  inference    1024², batch 1 and 8, TF32 and bf16: ours eager, ours compiled, the official code (HEAD f4e218b, the
               same weights): s/image, images/s, peak memory, TFLOP/s, MFU, max |Δlogit| vs official
  training     1024², batch 1 and 2: ours (bf16, each grad_checkpointing mode, eager and compiled), the official
               v2025.03 step (802b477, fp16 autocast + GradScaler as shipped): s/step, images/s, peak memory, MFU,
               compile time, host issue time, kernels per step, hours per 100 epochs of DIS-TR + DIS-VD validation
  impl         model.impl reference vs lean: training step 1024², batch 1 and 2, per grad_checkpointing mode
  end_to_end   one photo through Depth Anything V2 Small/Base/Large (the real architectures, random weights) and
               ours, batch 1, bf16: depth ms, segmentation ms, images/s, beside the paper's 5.7 / 4.5 / 3.9 FPS
  data         the recipe's DataLoader (1024², depth maps, cache warm) with 1/4/8/16 workers vs what a step consumes
  ddp          with >= 2 GPUs: the training step under torchrun on 1..N GPUs, scaling efficiency (CPU --quick: 2 gloo
               processes)

The official code is never part of this repository: pass checkouts (git clone github.com/Tennine2077/PDFNet; a
worktree at 802b477 for the training step). Without them the official rows are reported as not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

SECTIONS = ("environment", "inference", "training", "impl", "end_to_end", "data", "ddp")
DEFAULT_LIMITS = {"environment": 30, "inference": 120, "training": 150, "impl": 45, "end_to_end": 50, "data": 35,
                  "ddp": 50}  # 480 s: the 8 minutes of a device run
QUICK_LIMITS = {name: 900 for name in SECTIONS}

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s: (bf16, tf32, source).
DATASHEET_PEAKS = {
    "H200": (989.4, 494.7, "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 / TF32 989 TFLOPS with sparsity"),
    "H100 SXM": (989.4, 494.7, "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 / TF32 989 with sparsity"),
    "H100 PCIe": (756.0, 378.0, "NVIDIA H100 Tensor Core GPU datasheet (PCIe): BF16 1,513 / TF32 756 with sparsity"),
    "A100": (312.0, 156.0, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 / TF32 156 dense"),
    "L40S": (362.05, 183.0, "NVIDIA L40S datasheet: BF16 362.05 / TF32 183 dense (733 / 366 with sparsity)"),
    "RTX 4090": (165.2, 82.6, "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: BF16 (FP32 accumulate) "
                 "165.2 / TF32 82.6 dense"),
    "RTX 3090": (71.0, 35.6, "NVIDIA Ampere GA102 whitepaper, GeForce RTX 3090: BF16 (FP32 accumulate) 71 / TF32 "
                 "35.6 dense"),
}
DIS_TR_IMAGES, DIS_VD_IMAGES = 3000, 470


def datasheet_peak(gpu_name: str) -> tuple[str, tuple[float, float, str]] | tuple[None, None]:
    """(table key, (bf16, tf32, source)) for a CUDA device name, or (None, None) for a GPU not in the table."""
    name = gpu_name.upper()
    for key, test in (("H200", "H200"), ("H100 PCIe", "H100 PCIE"), ("H100 SXM", "H100"), ("A100", "A100"),
                      ("L40S", "L40S"), ("RTX 4090", "4090"), ("RTX 3090", "3090")):
        if test in name:
            return key, DATASHEET_PEAKS[key]
    return None, None


# ----------------------------------------------------------------------------------------------- measurement kit
def _torch():
    import torch

    return torch


def sync(device) -> None:
    from pdfnet.engine.profiling import synchronize

    synchronize(device)


def timed(fn, device, runs: int, warmup: int = 1) -> dict:
    """Median seconds of ``runs`` calls after ``warmup`` and their peak memory in MiB (CUDA max allocated, CPU peak
    RSS): :func:`pdfnet.engine.profiling.time_steps`, which the training benchmark uses too."""
    from pdfnet.engine.profiling import time_steps

    seconds, peak, _ = time_steps(lambda i: fn(), device, runs, warmup)
    return {"s": seconds, "peak_mib": round(peak)}


def count_kernels(fn, device) -> dict:
    """Ops dispatched by one call (aten ops; on a GPU about one kernel each) and, on CUDA, the kernels the profiler
    saw."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pdfnet.engine.profiling import NO_KERNEL_OPS

    count = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if name.startswith("aten.") and not func.is_view and name not in NO_KERNEL_OPS:
                count[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    out = {"aten_ops": count[0]}
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            sync(device)
        out["cuda_kernels"] = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    return out


def peaks_for(device, env: dict) -> dict[str, float | None]:
    """TFLOP/s to compute MFU against: the datasheet's dense peaks on a known GPU, else the measured matmul."""
    if env.get("datasheet"):
        return {"bf16": env["datasheet"]["bf16_tflops"], "tf32": env["datasheet"]["tf32_tflops"]}
    return {"bf16": env.get("matmul_bf16_tflops"), "tf32": env.get("matmul_fp32_tflops")}


def mfu(flops: float, seconds: float, peak: float | None) -> tuple[float, float | None]:
    achieved = flops / seconds / 1e12
    return round(achieved, 3), (round(achieved / peak, 4) if peak else None)


def model_cfg(args, size: int, **overrides: str):
    from pdfnet.config import load_config

    base = ["model.backbone=swin_tiny_test", "model.emb_dim=16"] if args.quick else []
    return load_config(None, [*base, f"data.size={size}", *[f"{k}={v}" for k, v in overrides.items()]])


def sizes(args) -> dict:
    """What each section measures: the full grid on a GPU; with --quick every code path once, on the tiny model."""
    if args.quick:
        # The compiled training row is left out: dynamo's capture of the whole training step is 36 of the section's
        # 46 s on 2 cores, and the same compile path is timed by the compiled inference row and tested in
        # tests/test_gpu_loop.py.
        return {"inference": 128, "batches": (1,), "dtypes": ("tf32",), "train": 128, "train_batches": (1,),
                "modes": ("none",), "impl_modes": ("none",), "compiled": set(),
                "compiled_dtypes": ("tf32",), "runs": 1, "warmup": 1}
    # Compiled: the bf16 inference model, the `none` training step (each inductor compile of the paper model takes
    # minutes: 160 s for inference at 1024² on an H200 with torch 2.11).
    return {"inference": 1024, "batches": (1, 8), "dtypes": ("tf32", "bf16"), "train": 1024, "train_batches": (1, 2),
            "modes": ("none", "encoder", "all"), "impl_modes": ("none", "encoder", "all"),
            "compiled": {(1, "none"), (2, "none")}, "compiled_dtypes": ("bf16",), "runs": 5, "warmup": 2}


def compile_backend(args) -> str:
    """inductor on GPUs; on a CPU dynamo's capture alone (``eager``): inductor's C++ build of the training step
    takes ~10 min on 2 cores, and --quick checks this script, not the CPU's compiled speed."""
    return args.compile_backend or ("eager" if args.device.startswith("cpu") else "inductor")


# ----------------------------------------------------------------------------------------------------- sections
def section_environment(args) -> dict:
    torch = _torch()
    from pdfnet.device import native_bf16, resolve_device
    from pdfnet.engine.profiling import matmul_peak_gflops

    device = resolve_device(args.device)
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
           "native_bf16": native_bf16(device), "date": time.strftime("%Y-%m-%d")}
    n = 512 if args.quick else 8192
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", visible_gpus=torch.cuda.device_count())
        key, peak = datasheet_peak(props.name)
        if peak:
            out["datasheet"] = {"model": key, "bf16_tflops": peak[0], "tf32_tflops": peak[1], "source": peak[2]}
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        out["matmul_fp32_tflops"] = round(matmul_peak_gflops(device, torch.float32, n) / 1e3, 1)  # TF32 on
        out["matmul_bf16_tflops"] = round(matmul_peak_gflops(device, torch.bfloat16, n) / 1e3, 1)
    else:
        out["matmul_fp32_tflops"] = round(matmul_peak_gflops(device, torch.float32, n) / 1e3, 3)
        out["matmul_bf16_tflops"] = None if not native_bf16(device) else round(
            matmul_peak_gflops(device, torch.bfloat16, n) / 1e3, 3)
    return out


def _weights(args, workdir: Path):
    """(official-format weights file or None, our model config): the official code's random init when an official
    checkout is given (both sides then load the same weights), else ours seeded."""
    torch = _torch()
    path = workdir / "official_weights.pth"
    if args.official_dir and not args.quick:
        if not path.is_file():
            from official_code import build_official_model

            torch.manual_seed(0)
            torch.save(build_official_model(args.official_dir).state_dict(), path)
        return path
    return None


def _ours(args, size: int, weights: Path | None, impl: str = "auto", depth_head: str = "false"):
    torch = _torch()
    from pdfnet.build import build_model
    from pdfnet.device import resolve_device
    from pdfnet.models.official import convert_state_dict

    device = resolve_device(args.device)
    cfg = model_cfg(args, size, **{"model.depth_head": depth_head, "model.impl": impl})
    if weights is not None:
        state = {k: v for k, v in convert_state_dict(torch.load(weights, weights_only=True)).items()
                 if not k.startswith("depth_decoder.")}
        return build_model(cfg, device, state).eval(), cfg
    torch.manual_seed(0)
    return build_model(cfg, device).eval(), cfg


def section_inference(args, env: dict) -> dict:
    torch = _torch()
    from pdfnet.device import configure_cuda_backends, resolve_device
    from pdfnet.engine.profiling import synthetic_batch

    device = resolve_device(args.device)
    s = sizes(args)
    workdir = Path(args.workdir)
    weights = _weights(args, workdir)
    model, _ = _ours(args, s["inference"], weights)
    peaks = peaks_for(device, env)
    official = None
    if args.official_dir and not args.quick:
        from official_code import build_official_model

        official = build_official_model(args.official_dir)
        official.load_state_dict(torch.load(weights, weights_only=True))
        official = official.to(device).eval()
    out = {"size": s["inference"], "rows": []}
    data = synthetic_batch(max(s["batches"]), s["inference"], device)
    flops = reference_flops(model_cfg(args, s["inference"], **{"model.depth_head": "false"}), 1, training=False)
    out["gflop_per_image"] = round(flops / 1e9, 1)
    compiled, compile_s = None, None
    for dtype in s["dtypes"]:
        configure_cuda_backends(device, tf32=True)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16"
                    else contextlib.nullcontext())
        for batch in s["batches"]:
            image, depth = data["image"][:batch], data["depth"][:batch]
            if compiled is None:
                compiled = torch.compile(model, backend=compile_backend(args), dynamic=False)  # one graph per batch
            runners = {}
            if official is not None:
                runners["official f4e218b"] = lambda im=image, de=depth: official.inference(im, de)[1]
            runners["ours eager"] = lambda im=image, de=depth: model(im, de)[0]
            if dtype in s["compiled_dtypes"]:
                runners["ours compiled"] = lambda im=image, de=depth, c=compiled: c(im, de)[0]
            logits = {}
            for name, run in runners.items():
                row = {"impl": name, "dtype": dtype, "batch": batch}
                try:
                    with torch.no_grad(), autocast:
                        if name == "ours compiled" and compile_s is None:
                            started = time.perf_counter()
                            run()
                            sync(device)
                            compile_s = out["compile_s"] = round(time.perf_counter() - started, 1)
                        r = timed(run, device, s["runs"])
                        logits[name] = run().float()
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                    out["rows"].append(row)
                    continue
                achieved, frac = mfu(flops * batch, r["s"], peaks[dtype])
                row.update(s_per_image=round(r["s"] / batch, 4), images_per_s=round(batch / r["s"], 2),
                           peak_mib=r["peak_mib"], tflops=achieved, mfu=frac)
                out["rows"].append(row)
                _write_partial(args, "inference", out)
            official_logits = logits.get("official f4e218b")
            if official_logits is not None:
                for row in out["rows"][-len(runners):]:
                    if row["impl"] in logits:
                        row["max_abs_logit_diff_vs_official"] = float(
                            (logits[row["impl"]] - official_logits).abs().max())
            del logits
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def _training_runner(args, cfg, batch: int, device, compile_: bool):
    """(one training step without a host sync, the model) for ``cfg``."""
    torch = _torch()
    from pdfnet.build import build_loss, build_model
    from pdfnet.device import training_amp_dtype
    from pdfnet.engine.compile import compile_for_training
    from pdfnet.engine.optim import make_optimizer
    from pdfnet.engine.profiling import synthetic_batch, training_step

    torch.manual_seed(0)
    model = build_model(cfg, device).train()
    # As the trainer does it: the model (one graph) and the loss compiled, fused AdamW on CUDA.
    forward = compile_for_training(model, "model" if compile_ else "none", compile_backend(args))
    loss_fn = build_loss(cfg, device)
    loss_call = torch.compile(loss_fn, backend=compile_backend(args)) if compile_ else loss_fn
    optimizer = make_optimizer(model, cfg.optim, device)
    amp_dtype = training_amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    data = synthetic_batch(batch, cfg.data.size, device)
    want_depth = model.has_depth_head and cfg.loss.depth_weight > 0

    def step():
        return training_step(forward, loss_call, optimizer, scaler, data, amp_dtype, want_depth)

    return step, model


def reference_flops(cfg, batch: int, training: bool) -> int:
    """FLOPs of one forward (``training``: forward, loss and backward) as the paper's model does them, counted on the
    meta device (shapes only, nothing computed). The same for every impl and compile mode: the counter sees only
    eager dispatch, and the lean CPU forms split some matmuls where it does not look."""
    torch = _torch()
    from pdfnet.build import build_loss, build_model
    from pdfnet.config import config_from_dict, config_to_dict
    from pdfnet.engine.profiling import count_flops, synthetic_batch

    meta = torch.device("meta")
    tree = config_to_dict(cfg)
    tree["model"]["impl"] = "reference"
    cfg = config_from_dict(tree)
    model = build_model(cfg, meta).train(training)
    data = synthetic_batch(batch, cfg.data.size, meta)
    want_depth = training and model.has_depth_head and cfg.loss.depth_weight > 0
    loss_fn = build_loss(cfg, meta)

    def run():
        with torch.set_grad_enabled(training):
            out = model(data["image"], data["depth"], return_depth=want_depth)
            if training:
                seg, dep = out if want_depth else (out, None)
                loss_fn(seg, data["mask"], data["depth_target"], dep)[0].backward()

    return count_flops(run)


def _measure_step(args, cfg, batch: int, device, peaks, compile_: bool, flops: float | None = None) -> dict:
    """One configuration's training step; ``flops`` as :func:`reference_flops` counts them (computed when not
    given)."""
    torch = _torch()

    step, model = _training_runner(args, cfg, batch, device, compile_)
    row = {}
    started = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - started
    if compile_:
        row["compile_s"] = round(first, 1)
    runs = sizes(args)["runs"]
    r = timed(step, device, runs, warmup=1)
    issue = []
    for _ in range(runs):  # host time until the step's last kernel is queued (no sync inside the step)
        sync(device)
        started = time.perf_counter()
        step()
        issue.append(time.perf_counter() - started)
        sync(device)
    flops = flops if flops is not None else reference_flops(cfg, batch, training=True)
    kernels = count_kernels(step, device) if not compile_ else {}
    amp = "bf16" if cfg.train.amp == "bf16" else cfg.train.amp
    achieved, frac = mfu(flops, r["s"], peaks["bf16" if amp == "bf16" else "tf32"])
    row.update(s_per_step=round(r["s"], 4), images_per_s=round(batch / r["s"], 2), peak_mib=r["peak_mib"],
               host_issue_s=round(statistics.median(issue), 4), tflops=achieved, mfu=frac,
               tflop_per_step=round(flops / 1e12, 3), **kernels)
    del step, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _training_setup(args, env: dict):
    """(device, sizes, peaks, amp, empty result) of a training section: bf16 where the device has it natively."""
    from pdfnet.device import configure_cuda_backends, resolve_device

    device = resolve_device(args.device)
    configure_cuda_backends(device, tf32=True)
    s = sizes(args)
    amp = "none" if device.type == "cpu" and not env.get("native_bf16") else "bf16"
    return device, s, peaks_for(device, env), amp, {"size": s["train"], "amp": amp, "rows": []}


def section_training(args, env: dict) -> dict:
    torch = _torch()
    device, s, peaks, amp, out = _training_setup(args, env)
    # Eager rows, then the official step, then the compiled rows (the slow compiles last: a section stopped by its
    # time limit keeps the rows before).
    plan = [(batch, mode, False) for batch in s["train_batches"] for mode in s["modes"]]
    plan += [(batch, "official", False) for batch in s["train_batches"]] if args.official_v1_dir else []
    plan += [(batch, mode, True) for batch in s["train_batches"] for mode in s["modes"] if (batch, mode) in
             s["compiled"]]
    flops: dict[tuple[int, str], float] = {}
    for batch, mode, compile_ in plan:
        if mode == "official":
            if device.type == "cuda":
                out["rows"].append(_official_training_step(args, batch, device, peaks))
                _write_partial(args, "training", out)
            continue
        cfg = model_cfg(args, s["train"], **{"model.grad_checkpointing": mode, "train.amp": amp})
        row = {"impl": "ours compiled" if compile_ else "ours eager", "batch": batch, "grad_checkpointing": mode}
        try:
            row.update(_measure_step(args, cfg, batch, device, peaks, compile_, flops.get((batch, mode))))
            flops[batch, mode] = row["tflop_per_step"] * 1e12
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
        except Exception as err:  # noqa: BLE001 - a failed compile is reported, the rest goes on
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        out["rows"].append(row)
        _write_partial(args, "training", out)
    best = max((r for r in out["rows"] if r["impl"].startswith("ours") and "images_per_s" in r),
               key=lambda r: r["images_per_s"], default=None)
    if best:
        out["best"] = {k: best[k] for k in ("impl", "batch", "grad_checkpointing", "images_per_s")}
        out["hours_per_100_epochs"] = _hours_per_100_epochs(best["images_per_s"], args)
    return out


def _hours_per_100_epochs(images_per_s: float, args) -> dict:
    """DIS-TR (3000 images) at the measured rate, plus DIS-VD validation (470 images) every epoch at the measured
    batched inference rate (bf16 where measured) when the inference section ran."""
    train_h = 100 * DIS_TR_IMAGES / images_per_s / 3600
    out = {"train": round(train_h, 2)}
    inference = _read_partial(args, "inference")
    eager = [r for r in inference.get("rows", []) if r.get("impl") == "ours eager" and "images_per_s" in r]
    rates = [r["images_per_s"] for r in eager if r["dtype"] == "bf16"] or [r["images_per_s"] for r in eager]
    if rates:
        val_h = 100 * DIS_VD_IMAGES / max(rates) / 3600
        out.update(validation=round(val_h, 2), total=round(train_h + val_h, 2),
                   validation_share=round(val_h / (train_h + val_h), 3))
    return out


def _official_training_step(args, batch: int, device, peaks) -> dict:
    torch = _torch()
    from official_code import build_official_model

    from pdfnet.engine.profiling import count_flops, synthetic_batch

    row = {"impl": "official 802b477 (fp16 + GradScaler)", "batch": batch, "grad_checkpointing": "-"}
    try:
        torch.manual_seed(0)
        model = build_official_model(args.official_v1_dir).to(device).train()
        model.device = device
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        scaler = torch.amp.GradScaler("cuda")
        data = synthetic_batch(batch, 1024, device)

        def step():
            with torch.autocast("cuda", dtype=torch.float16):
                _, loss, _ = model(data["image"], data["depth"], data["mask"], data["depth_target"])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        r = timed(step, device, sizes(args)["runs"], warmup=sizes(args)["warmup"])
        flops = count_flops(step)
        achieved, frac = mfu(flops, r["s"], peaks["bf16"])
        row.update(s_per_step=round(r["s"], 4), images_per_s=round(batch / r["s"], 2), peak_mib=r["peak_mib"],
                   tflops=achieved, mfu=frac, **count_kernels(step, device))
    except Exception as err:  # noqa: BLE001
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return row


def section_impl(args, env: dict) -> dict:
    torch = _torch()
    device, s, peaks, amp, out = _training_setup(args, env)
    for batch in s["train_batches"]:
        for mode in s["impl_modes"]:
            for impl in ("reference", "lean"):
                cfg = model_cfg(args, s["train"], **{"model.grad_checkpointing": mode, "train.amp": amp,
                                                     "model.impl": impl})
                row = {"impl": impl, "batch": batch, "grad_checkpointing": mode}
                try:
                    row.update(_measure_step(args, cfg, batch, device, peaks, False))
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                out["rows"].append(row)
                _write_partial(args, "impl", out)
    return out


def section_end_to_end(args, env: dict) -> dict:
    """One photo: Depth Anything V2 (the depth the predict command computes) then ours at 1024², bf16, batch 1."""
    torch = _torch()
    import numpy as np

    from pdfnet.depth import DepthEstimator
    from pdfnet.depth.anything import save_tiny_random_model
    from pdfnet.depth.architectures import save_random_depth_anything_v2
    from pdfnet.depth.ids import PAPER_FPS
    from pdfnet.device import configure_cuda_backends, resolve_device
    from pdfnet.engine.predictor import Predictor

    device = resolve_device(args.device)
    configure_cuda_backends(device, tf32=True)
    size = sizes(args)["inference"]
    model, cfg = _ours(args, size, None)
    predictor = Predictor(model, size=size, half=True)
    photo = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = {"size": size, "rows": []}
    for depth_size in (("tiny",) if args.quick else ("small", "base", "large")):
        folder = Path(args.workdir) / f"depth_anything_v2_{depth_size}"
        if depth_size == "tiny":  # --quick: a tiny Depth Anything (the code path, not the real size's time)
            save_tiny_random_model(folder)
        elif not folder.is_dir():
            save_random_depth_anything_v2(depth_size, folder)
        estimator = DepthEstimator(str(folder), device=device)
        depth_map = estimator([photo])[0]
        depth_t = timed(lambda e=estimator: e([photo]), device, sizes(args)["runs"])
        seg_t = timed(lambda d=depth_map: predictor([photo], [d]), device, sizes(args)["runs"])
        total = depth_t["s"] + seg_t["s"]
        out["rows"].append({"depth_model": f"Depth Anything V2 {depth_size}", "depth_ms": round(depth_t["s"] * 1e3, 1),
                            "segmentation_ms": round(seg_t["s"] * 1e3, 1), "images_per_s": round(1 / total, 2),
                            "paper_fps_rtx4090": PAPER_FPS.get(depth_size)})
        del estimator
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def section_data(args, env: dict) -> dict:
    """The recipe's samples (synthetic scenes with the four depth folders) through a DataLoader, cache warm."""
    torch = _torch()
    from benchmark_data import RECIPE_DEPTH, RECIPE_TARGET, recipe_split

    from pdfnet.config import AugmentConfig, DataConfig
    from pdfnet.data.dataset import DISDataset
    from pdfnet.data.datasets import training_samples
    from pdfnet.data.synthetic import write_split

    size = 256 if args.quick else 1024
    n = 8 if args.quick else 48
    root = Path(args.workdir) / "data"
    if not (root / "recipe").is_dir():
        write_split(root / "source", "DIS-TR", n, 2 * size, seed=0)
        recipe_split(root / "source", "DIS-TR", root / "recipe")
    cfg = DataConfig(root=str(root / "recipe"), train_split="DIS-TR", depth_choices=list(RECIPE_DEPTH),
                     depth_target_dir=RECIPE_TARGET, size=size)
    samples, _ = training_samples(cfg)
    dataset = DISDataset(samples, size, AugmentConfig(), cache_dir=root / "cache")
    for i in range(len(dataset)):  # fill the cache
        dataset[(0, i)]
    out = {"size": size, "samples": len(samples), "rows": []}
    training = _read_partial(args, "training")
    consumed = training.get("best", {}).get("images_per_s")
    for workers in ((0, 2) if args.quick else (1, 4, 8, 16)):
        if workers > (os.cpu_count() or 1):
            out["rows"].append({"workers": workers, "skipped": f"{os.cpu_count()} CPU cores"})
            continue
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0, collate_fn=lambda items: items)
        for _ in loader:
            break
        started = time.perf_counter()
        count = sum(len(b) for b in loader)
        rate = count / (time.perf_counter() - started)
        row = {"workers": workers, "images_per_s": round(rate, 2)}
        if consumed:
            row["step_consumes_images_per_s"] = consumed
            row["fed_ratio"] = round(rate / consumed, 2)  # >= 1: fed; < 1: the GPU starves by this factor
        out["rows"].append(row)
    return out


def section_ddp(args, env: dict) -> dict:
    torch = _torch()
    from pdfnet.device import resolve_device

    if args.device.startswith("cuda"):
        gpus = torch.cuda.device_count()
        if gpus < 2:
            return {"skipped": f"{gpus} GPU visible: scaling needs at least 2"}
        counts = [1, 2] + ([gpus] if gpus > 2 else [])
    else:
        counts = [1, 2]
    out = {"rows": []}
    for n in counts:
        if n == 1:  # the plain step in this process is the baseline: no launcher, no interpreter start
            try:
                out["rows"].append(ddp_step_row(args, 1, resolve_device(args.device)))
            except Exception as err:  # noqa: BLE001 - a failed row is reported in the table, as the others
                out["rows"].append({"gpus": 1, "error": f"{type(err).__name__}: {err}"[-500:]})
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()  # the 2-GPU ranks below share GPU 0 with this process
            continue
        result = Path(args.workdir) / f"ddp_{n}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               str(Path(__file__).resolve()), "--_ddp_probe", str(result), "--device", args.device]
        if args.quick:
            cmd.append("--quick")
        env_vars = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, timeout=args.limit_ddp)
        if done.returncode != 0:
            out["rows"].append({"gpus": n, "error": done.stderr[-500:]})
            continue
        out["rows"].append(json.loads(result.read_text()))
    base = next((r for r in out["rows"] if r.get("gpus") == 1 and "images_per_s" in r), None)
    for row in out["rows"]:
        if base and "images_per_s" in row:
            row["scaling_efficiency"] = round(row["images_per_s"] / (row["gpus"] * base["images_per_s"]), 3)
    return out


def ddp_step_row(args, world_size: int, device) -> dict:
    """The DDP section's row for this process: a timed training step (DDP as the trainer wraps it when
    ``world_size`` > 1, eager) after a warm-up."""
    torch = _torch()
    from pdfnet.build import build_loss, build_model
    from pdfnet.device import training_amp_dtype
    from pdfnet.engine.distributed import wrap_ddp
    from pdfnet.engine.profiling import synthetic_batch, training_step

    cfg = model_cfg(args, 128 if args.quick else 1024, **{"train.amp": "none" if device.type == "cpu" else "bf16"})
    torch.manual_seed(0)
    model = build_model(cfg, device).train()
    step_module = wrap_ddp(model, device) if world_size > 1 else model
    loss_fn = build_loss(cfg, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    amp_dtype = training_amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    data = synthetic_batch(1, cfg.data.size, device, seed=rank)
    r = timed(lambda: training_step(step_module, loss_fn, optimizer, scaler, data, amp_dtype, True), device,
              2 if args.quick else 5, warmup=sizes(args)["warmup"])
    return {"gpus": world_size, "s_per_step": round(r["s"], 4), "images_per_s": round(world_size / r["s"], 2)}


def ddp_probe(args) -> None:
    """One rank of the DDP section's multi-GPU rows (under torchrun)."""
    import torch.distributed as dist

    from pdfnet.engine.distributed import init_distributed, shutdown

    ctx, device = init_distributed(args.device)
    row = ddp_step_row(args, ctx.world_size, device)
    if ctx.is_main:
        Path(args._ddp_probe).write_text(json.dumps(row))
    if ctx.world_size > 1:
        dist.barrier()
    shutdown(ctx)


RUNNERS = {"environment": section_environment, "inference": section_inference, "training": section_training,
           "impl": section_impl, "end_to_end": section_end_to_end, "data": section_data, "ddp": section_ddp}


# ------------------------------------------------------------------------------------------------------ driver
def _partial_path(args, name: str) -> Path:
    return Path(args.workdir) / f"section_{name}.json"


def _write_partial(args, name: str, result: dict) -> None:
    from pdfnet.data.io import atomic_write_bytes

    atomic_write_bytes(_partial_path(args, name), json.dumps(result).encode("utf-8"))


def _read_partial(args, name: str) -> dict:
    path = _partial_path(args, name)
    return json.loads(path.read_text()) if path.is_file() else {}


def run_in_process_of_its_own(cmd: list[str], partial: Path, limit: int) -> dict:
    """A section in a process of its own, stopped at ``limit`` seconds; what it wrote before is kept."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        return json.loads(partial.read_text()) if partial.is_file() else \
            {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    except subprocess.TimeoutExpired:
        result = json.loads(partial.read_text()) if partial.is_file() else {}
        result["timed_out"] = f"stopped at its {limit} s limit; rows measured before are kept"
        return result


def run_section(args, name: str) -> int:
    env = _read_partial(args, "environment")
    try:
        result = section_environment(args) if name == "environment" else RUNNERS[name](args, env)
    except Exception as err:  # noqa: BLE001 - the parent reports it
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    _write_partial(args, name, result)
    return 0


def _cell(value) -> str:
    """A table cell: one line (an error's last lines), no column separators."""
    text = str(value)
    if "\n" in text:
        text = " / ".join(line.strip() for line in text.strip().splitlines()[-3:])
    return text.replace("|", "/")


def row_errors(report: dict) -> list[str]:
    """'section: error' for every row that failed (a section can finish with failed rows: OOM, a failed compile)."""
    return [f"{name}: {_cell(row['error'])}" for name, result in report["results"].items()
            for row in result.get("rows", []) if "error" in row]


def markdown(report: dict) -> str:
    lines = [f"# benchmark_gpu ({report['date']})", ""]
    env = report["results"].get("environment", {})
    lines.append(f"Device: {env.get('gpu', env.get('device'))}, torch {env.get('torch')}, CUDA {env.get('cuda')}; "
                 f"datasheet peaks: {env.get('datasheet', 'not in the table')}; measured matmul: bf16 "
                 f"{env.get('matmul_bf16_tflops')} / fp32(TF32) {env.get('matmul_fp32_tflops')} TFLOP/s.")
    for name in SECTIONS[1:]:
        result = report["results"].get(name)
        if result is None:
            continue
        lines += ["", f"## {name}", ""]
        if "error" in result or "skipped" in result or "timed_out" in result:
            lines.append(f"{result.get('error') or result.get('skipped') or result.get('timed_out')}")
        rows = result.get("rows", [])
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
        extra = {k: v for k, v in result.items() if k not in ("rows", "traceback", "seconds")}
        if extra:
            lines += ["", "```", json.dumps(extra, indent=1), "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny model, small sizes (a CPU check of this script)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for benchmark_gpu.json / .md")
    p.add_argument("--official_dir", default="", help="official checkout at HEAD (f4e218b): inference rows")
    p.add_argument("--official_v1_dir", default="", help="official checkout at 802b477: the training-step row")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--compile_backend", default="", help="torch.compile backend (default: inductor on GPUs, "
                   "eager (dynamo capture only) on CPU, where inductor's C++ build of the step takes ~10 min)")
    p.add_argument("--limits", nargs="*", default=[], metavar="SECTION=SECONDS",
                   help="per-section time limits (defaults sum to < 8 min on a GPU)")
    p.add_argument("--inline", action="store_true",
                   help="run the sections in this process, without their time limits (the CPU check in the tests; "
                        "a device run keeps each section in a process of its own)")
    p.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    p.add_argument("--_section", default="", help=argparse.SUPPRESS)
    p.add_argument("--_ddp_probe", default="", help=argparse.SUPPRESS)
    p.add_argument("--limit_ddp", type=int, default=300, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._ddp_probe:
        ddp_probe(args)
        return 0
    if args._section:
        return run_section(args, args._section)
    from pdfnet.data.io import atomic_write_bytes

    limits = dict(QUICK_LIMITS if args.quick else DEFAULT_LIMITS)
    for item in args.limits:
        name, _, seconds = item.partition("=")
        limits[name] = int(seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "results": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name in ["environment"] + [s for s in args.sections if s != "environment"]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_section", name, "--workdir", workdir,
                   "--device", args.device, "--official_dir", args.official_dir, "--official_v1_dir",
                   args.official_v1_dir, "--limit_ddp", str(limits["ddp"])]
            if args.compile_backend:
                cmd += ["--compile_backend", args.compile_backend]
            if args.quick:
                cmd.append("--quick")
            started = time.perf_counter()
            if args.inline:  # this process, no time limit: the CPU check of the sections' code (tests)
                args.workdir = workdir
                run_section(args, name)
                result = json.loads((Path(workdir) / f"section_{name}.json").read_text())
            else:
                result = run_in_process_of_its_own(cmd, Path(workdir) / f"section_{name}.json", limits[name])
            result["seconds"] = round(time.perf_counter() - started, 1)
            report["results"][name] = result
            print(f"[{name}] {result['seconds']} s" + (f": {result['error'].splitlines()[0]}" if "error" in result
                                                      else ""), flush=True)
            atomic_write_bytes(args.out / "benchmark_gpu.json", json.dumps(report, indent=1).encode("utf-8"))
            atomic_write_bytes(args.out / "benchmark_gpu.md", markdown(report).encode("utf-8"))
    failed = [n for n, r in report["results"].items() if "error" in r]
    rows = row_errors(report)
    print(f"wrote {args.out / 'benchmark_gpu.md'}" + (f"; sections with errors: {failed}" if failed else "")
          + (f"; {len(rows)} rows failed (see the tables)" if rows else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
