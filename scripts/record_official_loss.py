#!/usr/bin/env python
"""Record the official March-2025 training loss on the shared reference weights, for tests/test_official.py.

  git -C /tmp/PDFNet worktree add /tmp/PDFNet-v2025.03 802b477      # the official code at the released version
  python scripts/record_official_loss.py --official_dir /tmp/PDFNet-v2025.03

The official ``PDFNet_process.forward(img, depth, gt, depth_gt)`` (structure + SSIM + integrity-prior + SiLog losses
over the main and side outputs) runs in train mode, float32 on CPU, with dropout and stochastic depth off, on the
deterministic weights of ``../shared/reference/official_v1`` and the inputs of its ``inf256_b1`` case. The ground
truths are :func:`reference_mask` of the input depth (a large and a small object); the depth target is the raw input
depth (the official forward min-max normalises it). The JSON written holds the official total and main-output loss
of each; the test computes ours on the same weights and inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
OUT = REPO / "tests" / "data" / "official_v2025.03_training_loss.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_code import build_official_model, check_official_dir, disable_dropout  # noqa: E402

# Ground truths of the recorded cases: half the image, and a small object (where the weighted-IoU smoothing of
# v2025.03, +1, moves the loss visibly; on large objects it changes it by ~1e-6).
MASK_THRESHOLDS = {"half": 0.5, "small": 0.97}


def reference_mask(depth: np.ndarray, threshold: float) -> np.ndarray:
    """A test ground truth: pixels whose min-max normalised depth exceeds ``threshold``, float32 ``[B,1,H,W]``."""
    normalised = (depth - depth.min()) / (depth.max() - depth.min())
    return (normalised > threshold).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official_dir", required=True, help="the official code at commit 802b477")
    p.add_argument("--reference", type=Path, default=REFERENCE, help="the shared reference folder")
    p.add_argument("--out", type=Path, default=OUT, help="JSON to write")
    args = p.parse_args(argv)
    if problem := check_official_dir(args.official_dir):
        p.error(problem)
    sys.path.insert(0, str(args.reference))
    import official_weights  # type: ignore[import-not-found]

    torch.set_num_threads(2)
    model = build_official_model(args.official_dir, drop_path=0.0)
    disable_dropout(model)
    manifest = json.loads((args.reference / "official_v1" / "manifest.json").read_text())
    model.load_state_dict(official_weights.make_state_dict(manifest), strict=True)
    case = args.reference / "official_v1" / "inf256_b1"
    image = torch.from_numpy(np.load(case / "in_img.npy"))
    depth = np.load(case / "in_depth.npy")
    model.train()
    record = {
        "official_commit": "802b477", "case": "official_v1/inf256_b1", "dropout": 0.0, "drop_path": 0.0,
        "depth_target": "in_depth (raw; the official forward min-max normalises it)", "torch": torch.__version__,
        "masks": {},
    }
    for name, threshold in MASK_THRESHOLDS.items():
        mask = reference_mask(depth, threshold)
        with torch.no_grad():
            _, total, main_output = model(image, torch.from_numpy(depth), torch.from_numpy(mask),
                                          torch.from_numpy(depth))
        record["masks"][name] = {"threshold": threshold, "foreground_pixels": int(mask.sum()),
                                 "total_loss": float(total), "main_output_loss": float(main_output)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
