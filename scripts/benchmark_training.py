#!/usr/bin/env python
"""Training-step benchmark: time, peak memory and bytes saved for backward of real training steps.

One step = forward (RGB + depth + 8x8 patch pass) + PDFNetLoss (with the depth head's SiLog term) + backward +
AdamW step, on a synthetic batch, with random weights of the chosen backbone (the paper's Swin-B by default).

  python scripts/benchmark_training.py --size 1024 --batch 2 --amp bf16 --grad_checkpointing all
  python scripts/benchmark_training.py --size 512 --batch 1 --amp bf16 --grad_checkpointing none encoder all
  python scripts/benchmark_training.py --size 512 --batch 1 --official_dir /tmp/PDFNet-v2025.03 --steps 3

Several --grad_checkpointing modes run one after another, each in a fresh process (peak RSS is per process), and
the table shows each mode's memory relative to the first. Peak memory: CUDA max allocated; CPU peak resident set
size of the process during a step (weights, optimizer state and the step's working set).

--official_dir compares with the official training step (the March-2025 code, commit 802b477 of
github.com/Tennine2077/PDFNet, whose forward(img, depth, gt, depth_gt) returns the loss; it needs einops):
  git clone https://github.com/Tennine2077/PDFNet /tmp/PDFNet
  git -C /tmp/PDFNet worktree add /tmp/PDFNet-v2025.03 802b477
Both run float32 on the same official random initialisation and the same batch, with dropout and stochastic depth
off (so a step is deterministic), ours as model.variant v2025.03; each in its own process. The table adds each
implementation's time and peak memory relative to the official step and the largest relative gradient difference
of the first step over all parameter tensors (|g_ours - g_official|_2 / |g_official|_2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_code import build_official_model, check_official_dir, disable_dropout  # noqa: E402

MODES = ("none", "encoder", "all")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="square input size in pixels (multiple of 64)")
    p.add_argument("--batch", type=int, default=2, help="samples per step")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None,
                   help="autocast dtype (train.amp); default bf16, and none (float32) with --official_dir")
    p.add_argument("--grad_checkpointing", nargs="+", choices=MODES, default=["all"],
                   help="model.grad_checkpointing mode(s); several run in turn")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported) after one warm-up step")
    p.add_argument("--backbone", default="swin_base_patch4_window12_384", help="model.backbone (paper: Swin-B)")
    p.add_argument("--emb_dim", type=int, default=128, help="model.emb_dim (paper: 128)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--model_impl", choices=("auto", "reference", "lean"), default="auto",
                   help="model.impl of ours (auto: lean on CPU, reference on GPUs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    p.add_argument("--json", type=Path, default=None, help="write the results (a list, one entry per mode) here")
    p.add_argument("--official_dir", default="", help="checkout of the official code at commit 802b477 (v2025.03): "
                   "compare its training step with ours (float32, CPU or GPU)")
    p.add_argument("--workdir", type=Path, default=None, help="with --official_dir: keep the weights, batch and "
                   "official measurement here and reuse a matching official measurement (minutes on CPU)")
    p.add_argument("--_child", dest="child", choices=("official", "ours"), default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.amp is None:
        args.amp = "none" if args.official_dir else "bf16"
    return args


def run_one(args: argparse.Namespace, mode: str) -> dict:
    """One mode in this process."""
    import torch

    from pdfnet.config import load_config
    from pdfnet.device import resolve_device
    from pdfnet.engine.profiling import measure_training_steps

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_config(None, [f"model.backbone={args.backbone}", f"model.emb_dim={args.emb_dim}",
                             f"model.grad_checkpointing={mode}", f"data.size={args.size}", f"train.amp={args.amp}",
                             f"model.impl={args.model_impl}"])
    result = measure_training_steps(cfg, device, args.batch, steps=args.steps)
    out = dict(result.__dict__)
    out["model_impl"] = args.model_impl
    out["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out["threads"] = torch.get_num_threads()
    return out


def _comparison_config(args: argparse.Namespace, mode: str):
    """Our config for the comparison: the official March-2025 recipe without dropout and stochastic depth."""
    from pdfnet.config import load_config

    return load_config(None, ["model.variant=v2025.03", "model.drop_path=0", "model.fusion_dropout=0",
                              "model.depth_head=true", f"model.grad_checkpointing={mode}", f"data.size={args.size}",
                              "train.amp=none", f"model.impl={args.model_impl}"])


def _save_gradients(model, path: Path, key=lambda name: name) -> None:
    """The model's gradients, each under ``key(parameter name)`` (official key names for ours)."""
    import torch

    grads = {key(n): p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save(grads, path)


def run_official_child(args: argparse.Namespace) -> dict:
    """The official training step: forward(img, depth, gt, depth_gt) -> loss, backward, AdamW step. Writes the
    initial weights (both implementations start from them) and the first step's gradients into the work dir."""
    import torch

    from pdfnet.device import resolve_device
    from pdfnet.engine.profiling import time_steps

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_official_model(args.official_dir, drop_path=0.0)
    if not hasattr(model, "depth_decoder") or "gt" not in model.forward.__code__.co_varnames:
        raise SystemExit(f"--official_dir {args.official_dir}: its PDFNet_process has no training forward; check "
                         "out commit 802b477 (the March-2025 code), whose forward(img, depth, gt, depth_gt) returns "
                         "the loss")
    disable_dropout(model)
    torch.save(model.state_dict(), args.workdir / "weights.pth")
    model = model.to(device).train()
    cfg = _comparison_config(args, "none")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    data = {k: v.to(device) for k, v in torch.load(args.workdir / "batch.pt").items()}

    def step(i: int) -> float:
        _, loss, _ = model(data["image"], data["depth"], data["mask"], data["depth_target"])
        loss.backward()
        if i == 0:
            _save_gradients(model, args.workdir / "official_grads.pt")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step_s, peak, losses = time_steps(step, device, args.steps)
    return {"impl": "official", "grad_checkpointing": "-", "step_s": step_s, "peak_mib": peak, "losses": losses,
            "device": str(device), "size": args.size, "batch": args.batch, "threads": torch.get_num_threads()}


def run_ours_child(args: argparse.Namespace, mode: str) -> dict:
    """Our training step on the official weights written by :func:`run_official_child`."""
    import torch

    from pdfnet.build import build_model
    from pdfnet.device import resolve_device
    from pdfnet.engine.profiling import measure_training_steps
    from pdfnet.models.official import convert_state_dict, ours_to_official

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = _comparison_config(args, mode)
    model = build_model(cfg, device, convert_state_dict(torch.load(args.workdir / "weights.pth")))
    result = measure_training_steps(
        cfg, device, args.batch, steps=args.steps, model=model, data=torch.load(args.workdir / "batch.pt"),
        on_first_gradients=lambda m: _save_gradients(m, args.workdir / f"ours_{mode}_grads.pt", ours_to_official))
    return {"impl": "ours", **result.__dict__, "threads": torch.get_num_threads()}


def gradient_difference(official_path: Path, ours_path: Path) -> tuple[float, str, list[str]]:
    """Largest relative difference |g_ours - g_off|_2 / |g_off|_2 over the parameter tensors, the tensor where it
    occurs, and the tensors that have a gradient on one side only."""
    import torch

    official, ours = torch.load(official_path), torch.load(ours_path)
    one_sided = sorted(set(official) ^ set(ours))
    worst, where = 0.0, ""
    for key in sorted(set(official) & set(ours)):
        ref, got = official[key].double(), ours[key].double()
        scale = float(ref.norm())
        rel = float((got - ref).norm()) / scale if scale > 0 else float((got - ref).norm() > 0) * float("inf")
        if rel > worst:
            worst, where = rel, key
    return worst, where, one_sided


def compare_with_official(args: argparse.Namespace) -> int:
    """Official step, then ours for each --grad_checkpointing mode, each in a fresh process; prints the table."""
    import torch

    from pdfnet.engine.profiling import synthetic_batch

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        settings = {"size": args.size, "batch": args.batch, "steps": args.steps, "device": args.device,
                    "threads": args.threads, "official_dir": str(Path(args.official_dir).resolve())}
        cached = work / "official.json"
        reuse = cached.is_file() and json.loads(cached.read_text()).get("settings") == settings and all(
            (work / f).is_file() for f in ("batch.pt", "weights.pth", "official_grads.pt"))
        if not reuse:
            torch.save(synthetic_batch(args.batch, args.size, torch.device("cpu")), work / "batch.pt")
        base = [sys.executable, __file__, "--size", str(args.size), "--batch", str(args.batch), "--steps",
                str(args.steps), "--device", args.device, "--threads", str(args.threads), "--official_dir",
                args.official_dir, "--workdir", str(work), "--json", "/dev/stdout", "--model_impl", args.model_impl]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        results = []
        for child, mode in [("official", "none")] + [("ours", m) for m in args.grad_checkpointing]:
            if child == "official" and reuse:
                print(f"reusing the official measurement in {cached}", file=sys.stderr)
                results.append(json.loads(cached.read_text())["result"])
                continue
            done = subprocess.run(base + ["--_child", child, "--grad_checkpointing", mode], capture_output=True,
                                  text=True, env=env)
            if done.returncode != 0:
                why = "killed (out of memory?)" if done.returncode == -9 else f"exit {done.returncode}"
                print(f"{child} ({mode}) failed: {why}\n{done.stderr[-3000:]}", file=sys.stderr)
                if child == "official":
                    return 1
                results.append({"impl": child, "grad_checkpointing": mode, "failed": why})
                continue
            result = _last_json(done.stdout)[0]
            if child == "official":
                cached.write_text(json.dumps({"settings": settings, "result": result}))
            if child == "ours":
                diff, where, one_sided = gradient_difference(work / "official_grads.pt", work / f"ours_{mode}_grads.pt")
                result.update(max_rel_grad_diff=diff, worst_grad=where, one_sided_grads=one_sided)
            results.append(result)
    official = results[0]
    print(f"training step vs the official code (802b477), {official['device']}, {official['threads']} threads, "
          f"{args.size}² batch {args.batch}, float32, median of {args.steps} after a warm-up")
    print(f"{'impl':<10}{'checkpointing':<15}{'step s':>9}{'peak MiB':>10}{'time x':>8}{'memory x':>10}"
          f"{'max rel grad diff':>19}  first loss")
    ok = True
    for r in results:
        if "failed" in r:
            print(f"{r['impl']:<10}{r['grad_checkpointing']:<15}failed: {r['failed']}")
            ok = False
            continue
        r["time_ratio"], r["memory_ratio"] = r["step_s"] / official["step_s"], r["peak_mib"] / official["peak_mib"]
        diff = f"{r['max_rel_grad_diff']:.1e}" if "max_rel_grad_diff" in r else "-"
        print(f"{r['impl']:<10}{r['grad_checkpointing']:<15}{r['step_s']:>9.2f}{r['peak_mib']:>10.0f}"
              f"{r['time_ratio']:>8.2f}{r['memory_ratio']:>10.2f}{diff:>19}  {r['losses'][0]:.6f}")
        if r["impl"] == "ours":
            if r["one_sided_grads"]:
                print(f"  gradients on one side only: {', '.join(r['one_sided_grads'][:10])}")
                ok = False
            if r["max_rel_grad_diff"] > 1e-3:
                print(f"  gradient difference above 1e-3, largest at {r['worst_grad']}")
                ok = False
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


def print_table(results: list[dict]) -> None:
    base = next(r for r in results if "failed" not in r)
    print(f"training step, {base['device']} ({base['device_name']}, {base['threads']} threads), "
          f"{base['size']}² batch {base['batch']}, amp {base['amp']}")
    print(f"{'checkpointing':<14}{'step s':>9}{'peak MiB':>11}{'saved MiB':>11}{'saved x':>9}{'peak x':>8}  "
          "saved by module (MiB)")
    for r in results:
        if "failed" in r:
            print(f"{r['grad_checkpointing']:<14}{'failed: ' + r['failed']:>30}")
            continue
        parts = ", ".join(f"{k} {v:.0f}" for k, v in r["saved_by_module_mib"].items())
        saved, peak = r["saved_for_backward_mib"], r["peak_mib"]
        print(f"{r['grad_checkpointing']:<14}{r['step_s']:>9.2f}{peak:>11.0f}{saved:>11.0f}"
              f"{saved / base['saved_for_backward_mib']:>9.2f}{peak / base['peak_mib']:>8.2f}  {parts}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.size % 64 or args.size < 128:
        print(f"error: --size must be a multiple of 64 and at least 128, got {args.size}", file=sys.stderr)
        return 2
    if args.child:  # one implementation in this process (a child of compare_with_official)
        result = run_official_child(args) if args.child == "official" else run_ours_child(
            args, args.grad_checkpointing[0])
        print(json.dumps([result]))
        return 0
    if args.official_dir:
        problem = check_official_dir(args.official_dir)
        if problem is None and args.amp != "none":
            problem = f"--amp {args.amp}: the comparison with the official code runs float32 (--amp none)"
        if problem is None and (args.backbone, args.emb_dim) != ("swin_base_patch4_window12_384", 128):
            problem = "--official_dir compares the paper's model: leave --backbone and --emb_dim at their defaults"
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return compare_with_official(args)
    if len(args.grad_checkpointing) == 1:
        results = [run_one(args, args.grad_checkpointing[0])]
    else:
        results = []
        for mode in args.grad_checkpointing:  # a fresh process per mode: a clean peak RSS
            cmd = [sys.executable, __file__, "--size", str(args.size), "--batch", str(args.batch), "--amp", args.amp,
                   "--grad_checkpointing", mode, "--steps", str(args.steps), "--backbone", args.backbone,
                   "--emb_dim", str(args.emb_dim), "--device", args.device, "--threads", str(args.threads),
                   "--json", "/dev/stdout", "--model_impl", args.model_impl]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                # -9 is almost always the kernel's OOM killer: the mode does not fit this machine's memory.
                why = "killed (out of memory?)" if done.returncode == -9 else f"exit {done.returncode}"
                print(f"mode {mode} failed: {why}\n{done.stderr[-2000:]}", file=sys.stderr)
                results.append({"grad_checkpointing": mode, "failed": why})
                continue
            results.append(_last_json(done.stdout)[0])
    if not any("failed" not in r for r in results):
        print("error: no mode ran", file=sys.stderr)
        return 1
    if args.json is not None and str(args.json) == "/dev/stdout":
        print(json.dumps(results))
        return 0
    print_table(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any("failed" in r for r in results) else 0


def _last_json(text: str) -> list[dict]:
    return json.loads(text.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
