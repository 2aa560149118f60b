"""Validation during training: the same prediction and scoring path as ``pdfnet eval --ckpt`` (full-resolution
image and depth read from disk, resized to the model size, probabilities resized back, metrics at the mask's own
resolution), sharded across ranks; batched, in the training precision if asked, with the per-image metrics (~0.9 s of
CPU for a DIS image) computed by a process pool while the model predicts the next batch."""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import Sample
from ..data.io import probs_to_u8, read_depth, read_gray_u8, read_rgb_u8
from ..metrics import Evaluator
from ..metrics.evaluator import image_statistics
from ..workers import loader_worker_init
from .distributed import DistContext, gather_objects, shard
from .predictor import Predictor


class FullResolutionPairs(Dataset):
    """(name, RGB uint8 [H,W,3], depth float32 [H,W], GT uint8 [H,W]) per sample, decoded in loader workers."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        s = self.samples[index]
        return s.name, read_rgb_u8(s.image), read_depth(s.depth), read_gray_u8(s.mask)


def collate_as_is(item):
    return item  # keep NumPy arrays (the default would convert them to tensors)


def make_panel(image: np.ndarray, depth: np.ndarray, gt: np.ndarray, probs: np.ndarray, size: int) -> torch.Tensor:
    """image | depth | GT | prediction at ``size`` x ``size``: uint8 [3,S,4S]."""
    def square(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0]
        return t.expand(3, -1, -1) if t.shape[0] == 1 else t

    depth = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-12)
    parts = [square(image / 255.0), square(depth), square(gt / 255.0), square(probs)]
    return (torch.cat(parts, dim=2).clamp(0, 1) * 255).round().byte()


@torch.no_grad()
def validate(model: torch.nn.Module, samples: list[Sample], size: int, ctx: DistContext, with_hce: bool = False,
             num_workers: int = 0, panels: int = 0, panel_size: int = 256, progress=None, half: bool = False,
             batch_size: int = 1, pool: ProcessPoolExecutor | None = None
             ) -> tuple[dict[str, float] | None, list[torch.Tensor]]:
    """Metrics of ``model`` on ``samples`` (rank r predicts samples r, r+W, ...; rank 0 aggregates), the images
    ``batch_size`` at a time, under ``half`` (bf16/fp16 autocast as ``pdfnet eval --half``). With a ``pool`` the
    metrics of a batch are computed there while the next batch is predicted. ``pdfnet eval`` with the same
    ``--half``/``--batch_size`` gives the same numbers.

    Returns (metrics on rank 0 / None elsewhere, up to ``panels`` uint8 [3,P,4P] panels from rank 0).
    """
    was_training = model.training
    model.eval()
    predictor = Predictor(model, size=size, half=half, batch_size=batch_size)
    pairs = FullResolutionPairs(shard(samples, ctx))
    # Its own generator, not the global RNG (exact resume).
    loader = DataLoader(pairs, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_as_is,
                        worker_init_fn=loader_worker_init, generator=torch.Generator().manual_seed(0))
    pending, shown = [], []
    try:
        for batch in loader:
            names, images, depths, gts = zip(*batch)
            for name, image, depth, gt, probs in zip(names, images, depths, gts,
                                                      predictor(list(images), list(depths))):
                pred = probs_to_u8(probs)
                pending.append((name, pool.submit(image_statistics, pred, gt, with_hce) if pool is not None
                                else image_statistics(pred, gt, with_hce)))
                if ctx.is_main and len(shown) < panels:
                    shown.append(make_panel(image, depth, gt, probs, panel_size))
                if progress is not None:
                    progress()
    finally:
        model.train(was_training)
    stats = {name: (job.result() if isinstance(job, Future) else job) for name, job in pending}
    gathered = gather_objects(ctx, stats)
    if not ctx.is_main:
        return None, shown
    evaluator = Evaluator(hce=with_hce)
    for part in gathered:
        for name, s in part.items():
            evaluator.add_statistics(name, s)
    return evaluator.compute()["metrics"], shown


PANEL_LABELS = ("image", "pseudo-depth", "ground truth", "prediction")


def panel_grid(panels: list[torch.Tensor], labels: tuple[str, ...] = PANEL_LABELS) -> np.ndarray:
    """Stack panels vertically under a white header naming the columns: uint8 [28+H,W,3] for image files and
    tensorboard."""
    grid = torch.cat(panels, dim=1).permute(1, 2, 0).numpy()
    header = np.full((28, grid.shape[1], 3), 255, np.uint8)
    column = grid.shape[1] // len(labels)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.55
    for i, text in enumerate(labels):
        (text_w, _), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(header, text, (i * column + max(0, (column - text_w) // 2), 19), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([header, grid], axis=0)
