#!/usr/bin/env python
"""Training-step benchmark: time, peak memory and bytes saved for backward of real training steps.

One step = forward (RGB + depth + 8x8 patch pass) + PDFNetLoss (with the depth head's SiLog term) + backward +
AdamW step, on a synthetic batch, with random weights of the chosen backbone (the paper's Swin-B by default).

  python scripts/benchmark_training.py --size 1024 --batch 2 --amp bf16 --grad_checkpointing all
  python scripts/benchmark_training.py --size 512 --batch 1 --amp bf16 --grad_checkpointing none encoder all

Several --grad_checkpointing modes run one after another, each in a fresh process (peak RSS is per process), and
the table shows each mode's memory relative to the first. Peak memory: CUDA max allocated; CPU peak resident set
size of the process during a step (weights, optimizer state and the step's working set).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("none", "encoder", "all")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="square input size in pixels (multiple of 64)")
    p.add_argument("--batch", type=int, default=2, help="samples per step")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="bf16", help="autocast dtype (train.amp)")
    p.add_argument("--grad_checkpointing", nargs="+", choices=MODES, default=["all"],
                   help="model.grad_checkpointing mode(s); several run in turn")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported) after one warm-up step")
    p.add_argument("--backbone", default="swin_base_patch4_window12_384", help="model.backbone (paper: Swin-B)")
    p.add_argument("--emb_dim", type=int, default=128, help="model.emb_dim (paper: 128)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    p.add_argument("--json", type=Path, default=None, help="write the results (a list, one entry per mode) here")
    return p.parse_args(argv)


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
                             f"model.grad_checkpointing={mode}", f"data.size={args.size}", f"train.amp={args.amp}"])
    result = measure_training_steps(cfg, device, args.batch, steps=args.steps)
    out = dict(result.__dict__)
    out["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out["threads"] = torch.get_num_threads()
    return out


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
    if len(args.grad_checkpointing) == 1:
        results = [run_one(args, args.grad_checkpointing[0])]
    else:
        results = []
        for mode in args.grad_checkpointing:  # a fresh process per mode: a clean peak RSS
            cmd = [sys.executable, __file__, "--size", str(args.size), "--batch", str(args.batch), "--amp", args.amp,
                   "--grad_checkpointing", mode, "--steps", str(args.steps), "--backbone", args.backbone,
                   "--emb_dim", str(args.emb_dim), "--device", args.device, "--threads", str(args.threads),
                   "--json", "/dev/stdout"]
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
