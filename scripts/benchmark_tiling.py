#!/usr/bin/env python
"""Time and peak memory of plain vs tiled inference on real high-resolution images (e.g. DIS-5K samples).

  python scripts/benchmark_tiling.py --root ../shared/data/dis5k-samples --max_images 3
  python scripts/benchmark_tiling.py --root DIS5K --device cuda --half --batch_size 8 --ckpt best.pth

For each image: the plain path (resize to --size, predict, resize back) and the tiled path (a global pass plus
overlapping --size tiles at full resolution), with peak memory measured during each call: on CPU the process peak RSS
(reset before each call; "added" = peak minus the RSS before the call, i.e. the inference's own working set, which
includes the image-sized output), on CUDA the max allocated. Without --ckpt the paper's model (Swin-B) is randomly
initialised: time and memory do not depend on the weights. Every tile is computed (--skip_confidence 1), the worst
case; with trained weights, tiles that the global pass finds uniform are skipped. The samples have no depth maps: a
stand-in (the image's luminance) is used, which does not change time or memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pdfnet.data.io import list_images, read_rgb_u8


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Peak memory of the enclosed block in MiB: CUDA max allocated, or the CPU process peak RSS (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.before = _rss_mib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak = _rss_mib("VmHWM")
        self.added = self.peak - self.before


def pick_images(root: Path, max_images: int) -> list[Path]:
    """Up to ``max_images`` images under root (searched recursively; only ``im`` folders when there are any),
    spread evenly over pixel count from the smallest to the largest."""
    folders = [f for f in [root, *root.rglob("*")] if f.is_dir()]
    if any(f.name == "im" for f in folders):  # a DIS-5K layout: images only, not the gt masks beside them
        folders = [f for f in folders if f.name == "im"]
    paths = sorted({p for folder in folders for p in list_images(folder).values()})
    if not paths:
        raise SystemExit(f"no images under {root}")
    import cv2

    def pixels(p: Path) -> int:
        h, w = cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape[:2]
        return h * w

    paths.sort(key=pixels)
    if len(paths) <= max_images:
        return paths
    return [paths[round(i * (len(paths) - 1) / (max_images - 1))] for i in range(max_images)] if max_images > 1 \
        else [paths[-1]]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="a folder with images (searched recursively)")
    p.add_argument("--max_images", type=int, default=3, help="images picked evenly from smallest to largest")
    p.add_argument("--ckpt", default="", help="a checkpoint (default: the paper's model, random weights)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--overlap", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--skip_confidence", type=float, default=1.0, help="1 = compute every tile (worst case)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--half", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from pdfnet.engine.inference import load_model, predict_probs
    from pdfnet.engine.tiling import count_tiles, predict_probs_tiled
    from pdfnet.models import PDFNet

    device = torch.device(args.device)
    if args.ckpt:
        model, _ = load_model(args.ckpt, device)
    else:
        torch.manual_seed(0)
        model = PDFNet(depth_head=False).to(device).eval()
    rows = []
    warm = np.zeros((args.size, args.size, 3), np.uint8)
    predict_probs(model, warm, warm[..., 0].astype(np.float32), args.size, half=args.half)  # warm-up
    for path in pick_images(args.root, args.max_images):
        image = read_rgb_u8(path)
        depth = image.mean(axis=2, dtype=np.float32) / 255  # stand-in: time and memory do not depend on it
        h, w = image.shape[:2]
        row = {"image": path.name, "height": h, "width": w, "megapixels": h * w / 1e6,
               "image_and_depth_mib": (image.nbytes + depth.nbytes) / 2**20,
               "tiles": count_tiles(h, w, args.size, args.overlap)}
        for mode in ("plain", "tiled"):
            t = time.perf_counter()
            with PeakMemory(device) as mem:
                if mode == "plain":
                    probs = predict_probs(model, image, depth, args.size, half=args.half)
                else:
                    probs = predict_probs_tiled(model, image, depth, args.size, half=args.half, overlap=args.overlap,
                                                batch_size=args.batch_size, skip_confidence=args.skip_confidence)
            row[f"{mode}_s"] = time.perf_counter() - t
            row[f"{mode}_peak_mib"], row[f"{mode}_added_mib"] = mem.peak, mem.added
            assert probs.shape == (h, w)
            del probs
        rows.append(row)
        print(f"{path.name[:48]:48s} {w}x{h} ({row['megapixels']:.1f} MP), {row['tiles']} tile(s): "
              f"plain {row['plain_s']:.1f} s / +{row['plain_added_mib']:.0f} MiB, "
              f"tiled {row['tiled_s']:.1f} s / +{row['tiled_added_mib']:.0f} MiB "
              f"(peak {row['tiled_peak_mib']:.0f} MiB)", flush=True)
    passes = [r["tiled_s"] / (r["tiles"] + 1) for r in rows if r["tiles"] > 1]
    if passes:
        print(f"tiled: {statistics.median(passes):.1f} s per model pass (median); device {device}, "
              f"{'bf16 autocast' if args.half else 'float32'}, tiles {args.size} px, overlap >= {args.overlap} px")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
