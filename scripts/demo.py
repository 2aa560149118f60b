#!/usr/bin/env python
"""Model demo: build PDFNet, predict on a synthetic DIS-like image, print shapes, parameters and timing.

  python scripts/demo.py                       # tiny Swin on CPU (seconds)
  python scripts/demo.py --backbone swin_base_patch4_window12_384 --size 1024 --device cuda

The model is randomly initialised (no weights are downloaded), so the mask is meaningless; the point is the pipeline:
shapes, speed and memory on your machine.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from pdfnet.config import BACKBONES, VARIANTS
from pdfnet.models import PDFNet, count_parameters


def synthetic_scene(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A thin ring-and-spokes object over clutter: image [1,3,S,S] (ImageNet-normalised) and depth [1,1,S,S]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    radius = (xx**2 + yy**2).sqrt()
    angle = torch.atan2(yy, xx)
    fg = ((radius - 0.6).abs() < 0.02) | ((torch.sin(8 * angle).abs() < 0.05) & (radius < 0.6))
    clutter = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(size, size),
                                              mode="bilinear")
    rgb = torch.where(fg, torch.tensor([0.9, 0.8, 0.2]).view(1, 3, 1, 1), clutter)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    depth = torch.where(fg, torch.full_like(radius, 0.2), 0.5 + 0.5 * torch.rand(size, size, generator=g))
    return (rgb - mean) / std, depth.view(1, 1, size, size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=BACKBONES, default="swin_tiny_test")
    p.add_argument("--variant", choices=VARIANTS, default="v2026")
    p.add_argument("--size", type=int, default=256, help="input size, multiple of 64")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if args.size % 64 or args.size < 128:
        p.error(f"--size must be a multiple of 64 and at least 128, got {args.size}")
    device = torch.device(args.device)
    emb = 128 if args.backbone.startswith("swin_base") else 32
    torch.manual_seed(0)
    model = PDFNet(backbone=args.backbone, emb_dim=emb, variant=args.variant, depth_head=False).to(device).eval()
    image, depth = (t.to(device) for t in synthetic_scene(args.size))
    print(f"PDFNet {args.variant}, backbone {args.backbone}, {count_parameters(model):,} parameters, {device}")
    times = []
    with torch.inference_mode():
        for _ in range(args.runs + 1):
            t = time.perf_counter()
            logits = model(image, depth)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
    names = ["main"] + [f"side{i}" for i in range(1, 6)]
    for name, out in zip(names, logits):
        print(f"  {name:6s} logits {list(out.shape)}")
    probs = logits[0].sigmoid()
    print(f"  mask probabilities: mean {probs.mean():.3f}, min {probs.min():.3f}, max {probs.max():.3f}")
    best = min(times[1:])
    print(f"input {args.size}x{args.size}: {best * 1000:.0f} ms per forward (best of {args.runs} after warm-up)")
    assert all(math.isfinite(float(o.float().abs().max())) for o in logits)


if __name__ == "__main__":
    main()
