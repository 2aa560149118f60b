#!/usr/bin/env python
"""Everything a GPU must prove, in one command: correctness, precision, speed, memory, compile, DDP, depth.

  python scripts/gpu_selfcheck.py                          # the paper's model at 1024² on the first GPU (~5-8 min)
  python scripts/gpu_selfcheck.py --device cpu --quick     # the same sections, tiny model on CPU (what CI runs)

Writes <out>/gpu_selfcheck.json and <out>/gpu_selfcheck.md (a markdown table for the README) and exits 1 when any
check fails. Sections:
  environment    torch, CUDA, GPU name, native bf16
  parity         official reference logits (../shared/reference) on this device in float32, TF32 off (must be
                 <= 1e-3) and TF32 on (reported)
  bf16           bf16 autocast inference vs float32 at the model size: max |Δprob|, mask IoU at 0.5
  inference      latency (s/image) and peak memory, batch 1 and 8
  training       step time and peak memory, batch 1 and 2, bf16, each grad_checkpointing mode
  overfit        30 training steps on one batch: the loss must fall by >= 50 %
  ddp            a DDP training step over all visible GPUs with torchrun (one process and an nccl group of one
                 when there is one GPU); the replicas must stay identical
  depth          scripts/prepare_depth.py's estimator on this device with a tiny random Depth Anything model
  compile        torch.compile on/off for inference: compile time and speed-up, or the error
  compile_train  the same for a bf16 training step at 512² (compiling takes the longest, so these two come last)

The report is rewritten after every section, so a run stopped by a time limit keeps what it measured.
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

import torch  # noqa: E402

from pdfnet.build import build_loss, build_model  # noqa: E402
from pdfnet.config import load_config  # noqa: E402
from pdfnet.data.io import atomic_write_bytes  # noqa: E402
from pdfnet.device import (  # noqa: E402
    configure_cuda_backends,
    cpu_emulates_bf16,
    native_bf16,
    resolve_device,
    training_amp_dtype,
)
from pdfnet.engine.inference import probability_agreement  # noqa: E402
from pdfnet.engine.profiling import (  # noqa: E402
    measure_training_steps,
    peak_memory_mib,
    reset_peak_memory,
    synchronize,
    synthetic_batch,
    training_step,
)

DEFAULT_REFERENCE = REPO.parent / "shared" / "reference"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny model, small sizes (a CPU smoke test of this script)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for gpu_selfcheck.json / .md")
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                   help="the official reference folder (official_weights.py, official*/manifest.json, inf256_b1/)")
    p.add_argument("--sections", nargs="+", default=None, help="run only these sections")
    p.add_argument("--compile_backend", default="inductor", help="torch.compile backend of the compile section")
    p.add_argument("--ddp_probe", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one DDP rank
    return p.parse_args(argv)


class Checks:
    """Collects each section's figures and pass/fail verdicts."""

    def __init__(self) -> None:
        self.results: dict[str, dict] = {}
        self.failed: list[str] = []

    def run(self, name: str, fn, *args) -> None:
        started = time.perf_counter()
        try:
            self.results[name] = fn(*args)
        except Exception as err:  # a crashed section is a failed check, with its traceback kept
            self.results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            self.failed.append(f"{name}: crashed ({type(err).__name__}: {err})")
        self.results[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"[{name}] {json.dumps({k: v for k, v in self.results[name].items() if k != 'traceback'})}",
              flush=True)

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failed.append(what)
        return ok


def model_config(quick: bool, size: int | None = None, **overrides: str):
    base = ["model.backbone=swin_tiny_test", "model.emb_dim=16"] if quick else []
    size = size or (256 if quick else 1024)
    return load_config(None, [*base, f"data.size={size}", *[f"{k}={v}" for k, v in overrides.items()]])


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
            "native_bf16": native_bf16(device), "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), visible_gpus=torch.cuda.device_count())
    return info


def parity(device: torch.device, quick: bool, checks: Checks, reference: Path) -> dict:
    import numpy as np

    from pdfnet.models.official import load_official

    out: dict = {}
    # --quick: the released checkpoint's version only (each check builds the paper-size model).
    for version_dir in ("official_v1",) if quick else ("official_v1", "official"):
        root = reference / version_dir
        if not (root / "manifest.json").is_file():
            out[version_dir] = f"skipped: {root / 'manifest.json'} absent"
            continue
        if quick and device.type == "cpu":  # the paper-size model on a CPU: tests/test_official.py's job (~10 s)
            out[version_dir] = "skipped: --quick on a CPU (tests/test_official.py checks parity there)"
            continue
        sys.path.insert(0, str(reference))
        import official_weights  # type: ignore[import-not-found]

        manifest = json.loads((root / "manifest.json").read_text())
        model = load_official(official_weights.make_state_dict(manifest)).to(device).eval()
        case = root / "inf256_b1"
        image = torch.from_numpy(np.load(case / "in_img.npy")).to(device)
        depth = torch.from_numpy(np.load(case / "in_depth.npy")).to(device)
        expected = np.load(case / "out_logits.npy")
        for tf32 in ((False, True) if device.type == "cuda" else (False,)):  # TF32 exists on CUDA only
            configure_cuda_backends(device, tf32=tf32)
            with torch.no_grad():
                logits = model(image, depth)[0].float().cpu().numpy()
            diff = float(np.abs(logits - expected).max())
            out[f"{version_dir}_{'tf32' if tf32 else 'fp32'}_max_abs_logit_diff"] = diff
            if not tf32:
                checks.expect(diff <= 1e-3, f"parity {version_dir}: max |Δlogit| {diff:.2e} > 1e-3 (float32)")
        configure_cuda_backends(device, tf32=False)
        del model
    return out


def _model(quick: bool, device: torch.device, size: int | None = None):
    torch.manual_seed(0)
    cfg = model_config(quick, size, **{"model.depth_head": "false"})
    return build_model(cfg, device).eval(), cfg.data.size


def bf16_agreement(device: torch.device, quick: bool) -> dict:
    model, size = _model(quick, device)
    batch = synthetic_batch(1, size, device)
    with torch.no_grad():
        p32 = model(batch["image"], batch["depth"])[0].float().sigmoid()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            p16 = model(batch["image"], batch["depth"])[0].float().sigmoid()
    return {"size": size, **probability_agreement(p32, p16)}


def _time(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    reset_peak_memory(device)
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), peak_memory_mib(device)


def inference(device: torch.device, quick: bool) -> dict:
    model, size = _model(quick, device, 128 if quick else None)
    out = {"size": size}
    for batch_size in ((1, 2) if quick else (1, 8)):
        batch = synthetic_batch(batch_size, size, device)
        for half in (False, True):
            context = torch.autocast(device.type, dtype=torch.bfloat16) if half else contextlib.nullcontext()

            def run(batch=batch, context=context):
                with torch.no_grad(), context:
                    model(batch["image"], batch["depth"])

            key = f"batch{batch_size}_{'bf16' if half else 'fp32'}"
            try:
                seconds, peak = _time(run, device, 2 if quick else 5)
            except torch.OutOfMemoryError:
                out[key] = "out of memory"
                torch.cuda.empty_cache()
                continue
            out[f"{key}_s_per_image"] = round(seconds / batch_size, 4)
            out[f"{key}_peak_mib"] = round(peak)
    return out


def training_amp(device: torch.device) -> str:
    """bf16 autocast for the training sections, float32 on a CPU that only emulates bf16 (slower, as --half)."""
    return "none" if cpu_emulates_bf16(device) else "bf16"


def training(device: torch.device, quick: bool) -> dict:
    out = {"amp": training_amp(device)}
    for batch in (1, 2):
        for mode in ("none", "encoder", "all"):
            cfg = model_config(quick, 128 if quick else 1024, **{"model.grad_checkpointing": mode,
                                                                   "train.amp": training_amp(device)})
            try:
                r = measure_training_steps(cfg, device, batch, steps=1 if quick else 3)
                out[f"batch{batch}_{mode}"] = {"step_s": round(r.step_s, 3), "peak_mib": round(r.peak_mib),
                                               "saved_for_backward_mib": round(r.saved_for_backward_mib)}
            except torch.OutOfMemoryError:
                out[f"batch{batch}_{mode}"] = "out of memory"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def compile_inference(device: torch.device, quick: bool, backend: str) -> dict:
    out = {"backend": backend}
    if quick and device.type == "cpu":  # compiling on a CPU is checked by benchmark_gpu --quick and the test suite
        out["skipped"] = "--quick on a CPU (compile is checked by benchmark_gpu --quick and tests/test_gpu_loop.py)"
        return out
    model, size = _model(quick, device)
    batch = synthetic_batch(1, size, device)

    def infer(m):
        with torch.no_grad():
            m(batch["image"], batch["depth"])

    eager_s, _ = _time(lambda: infer(model), device, 2)
    try:
        compiled = torch.compile(model, backend=backend)
        started = time.perf_counter()
        infer(compiled)
        synchronize(device)
        out["compile_s"] = round(time.perf_counter() - started, 1)
        compiled_s, _ = _time(lambda: infer(compiled), device, 2)
        out["speedup"] = round(eager_s / compiled_s, 2)
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return out


def compile_training(device: torch.device, quick: bool, backend: str) -> dict:
    if quick:
        # Tracing the whole training step takes minutes on 2 CPU cores; the GPU run measures it.
        return {"backend": backend, "skipped": "not run with --quick"}
    out = {"backend": backend, "size": 512}
    cfg = model_config(quick, 512, **{"train.amp": "bf16", "train.compile": "true"})
    try:
        eager = measure_training_steps(model_config(quick, 512, **{"train.amp": "bf16"}),
                                       device, 1, steps=2)
        started = time.perf_counter()
        compiled = measure_training_steps(cfg, device, 1, steps=2, compile_backend=backend)
        out["total_s"] = round(time.perf_counter() - started, 1)
        out["speedup"] = round(eager.step_s / compiled.step_s, 2)
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return out


def overfit(device: torch.device, quick: bool, checks: Checks) -> dict:
    cfg = model_config(quick, 128 if quick else 512, **{"optim.lr": "3e-3" if quick else "1e-4",
                                                        "train.amp": training_amp(device), "model.drop_path": "0.0",
                                                        "model.fusion_dropout": "0.0"})
    r = measure_training_steps(cfg, device, 1 if quick else 2, steps=29, warmup=1)
    first, last = r.losses[0], min(r.losses[-3:])
    checks.expect(last <= 0.5 * first, f"overfit: loss {first:.4f} -> {last:.4f} fell by less than 50 %")
    return {"size": cfg.data.size, "amp": cfg.train.amp, "loss_first": round(first, 4), "loss_last": round(last, 4),
            "fell_by": round(1 - last / first, 3)}


def ddp(device: torch.device, quick: bool, checks: Checks, out_dir: Path) -> dict:
    world = torch.cuda.device_count() if device.type == "cuda" else 1
    report = out_dir / "ddp_probe.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), __file__,
           "--device", "cuda" if device.type == "cuda" else "cpu", "--ddp_probe", str(report)]
    if quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    ok = checks.expect(done.returncode == 0 and report.is_file(), f"ddp: torchrun exited {done.returncode}")
    result = json.loads(report.read_text()) if report.is_file() else {"stderr": done.stderr[-2000:]}
    if ok:
        checks.expect(result["replicas_identical"], "ddp: replicas differ after the step")
    return {"processes": world, **result}


def ddp_probe(args: argparse.Namespace) -> int:
    """One torchrun rank: a DDP training step of the tiny/paper model; rank 0 reports."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pdfnet.engine.distributed import init_distributed

    ctx, device = init_distributed(args.device)
    if not ctx.enabled:  # one GPU: still exercise an nccl (or gloo) group, of one process
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1,
                                device_id=device if device.type == "cuda" else None)
    cfg = model_config(args.quick, 128 if args.quick else 512)
    torch.manual_seed(0)
    model = build_model(cfg, device).train()
    ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(1, cfg.data.size, device, seed=dist.get_rank())
    amp_dtype = training_amp_dtype(device, training_amp(device))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    started = time.perf_counter()
    training_step(ddp_model, build_loss(cfg, device), optimizer, scaler, batch, amp_dtype, True)
    synchronize(device)
    seconds = time.perf_counter() - started
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    identical = all(torch.equal(gathered[0], g) for g in gathered)
    if dist.get_rank() == 0:
        args.ddp_probe.write_text(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                                              "replicas_identical": identical, "step_s": round(seconds, 3)}))
    dist.destroy_process_group()
    return 0


def depth(device: torch.device, checks: Checks) -> dict:
    import numpy as np

    from pdfnet.depth.anything import DepthEstimator, save_tiny_random_model

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        save_tiny_random_model(folder)
        estimator = DepthEstimator(folder, device=device)
        images = [np.random.default_rng(i).integers(0, 255, (300, 400, 3), dtype=np.uint8) for i in range(3)]
        started = time.perf_counter()
        maps = estimator(images)
        seconds = time.perf_counter() - started
    ok = all(m.shape == (300, 400) and np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1 for m in maps)
    checks.expect(ok, "depth: maps of the wrong size or outside [0, 1]")
    return {"maps_ok": ok, "autocast": str(estimator.autocast_dtype), "seconds": round(seconds, 2)}


def markdown(results: dict, failed: list[str]) -> str:
    env = results.get("environment", {})
    lines = [f"GPU self-check, {env.get('date')}: {env.get('gpu', env.get('device'))}, torch {env.get('torch')}, "
             f"CUDA {env.get('cuda')}, native bf16 {env.get('native_bf16')}", "",
             "| section | figure | value |", "| --- | --- | --- |"]
    for section, values in results.items():
        if section == "environment":
            continue
        for key, value in values.items():
            if key in ("traceback",):
                continue
            shown = json.dumps(value) if isinstance(value, dict) else value
            lines.append(f"| {section} | {key} | {shown} |")
    lines += ["", "All checks passed." if not failed else "FAILED: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


SECTIONS = ("environment", "parity", "bf16", "inference", "training", "overfit", "ddp", "depth", "compile",
            "compile_train")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_probe is not None:
        return ddp_probe(args)
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    wanted = args.sections or SECTIONS
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        print(f"error: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    checks = Checks()
    jobs = {"environment": (environment, device), "parity": (parity, device, args.quick, checks, args.reference),
            "bf16": (bf16_agreement, device, args.quick), "inference": (inference, device, args.quick),
            "training": (training, device, args.quick),
            "compile": (compile_inference, device, args.quick, args.compile_backend),
            "compile_train": (compile_training, device, args.quick, args.compile_backend),
            "overfit": (overfit, device, args.quick, checks), "ddp": (ddp, device, args.quick, checks, args.out),
            "depth": (depth, device, checks)}
    for name in SECTIONS:
        if name in wanted:
            fn, *fn_args = jobs[name]
            checks.run(name, fn, *fn_args)
            table = write_report(args.out, checks)
    print(table)
    return 1 if checks.failed else 0


def write_report(out: Path, checks: Checks) -> str:
    """Rewrites <out>/gpu_selfcheck.json and .md with the sections run so far; returns the markdown table."""
    report = json.dumps({"results": checks.results, "failed": checks.failed}, indent=2)
    atomic_write_bytes(out / "gpu_selfcheck.json", report.encode())
    table = markdown(checks.results, checks.failed)
    atomic_write_bytes(out / "gpu_selfcheck.md", table.encode())
    return table


if __name__ == "__main__":
    sys.exit(main())
