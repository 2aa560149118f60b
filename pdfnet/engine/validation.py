"""Validation during training: predict a split (sharded across ranks), score at each mask's own resolution."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD, DISDataset
from ..data.io import probs_to_u8, read_gray_u8
from ..metrics import Evaluator
from ..metrics.evaluator import image_statistics
from .distributed import DistContext, gather_objects
from .inference import predict_logits


def _panel(image: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """image | depth | GT | prediction for one sample at model size: uint8 [3,S,4S]."""
    rgb = (image.cpu().float() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
    grays = [t.cpu().float().clamp(0, 1).expand(3, -1, -1) for t in (depth, mask, probs)]
    return (torch.cat([rgb, *grays], dim=2) * 255).round().byte()


@torch.no_grad()
def validate(model: torch.nn.Module, dataset: DISDataset, ctx: DistContext, device: torch.device,
             amp_dtype: torch.dtype | None = None, with_hce: bool = False, batch_size: int = 1,
             num_workers: int = 0, panels: int = 0, progress=None) -> tuple[dict[str, float] | None, list]:
    """Metrics of ``model`` on ``dataset`` (each rank predicts every world_size-th sample; rank 0 aggregates).

    Predictions are resized (bilinear) to the original image size and quantised like saved PNGs; GT masks are read
    from disk at full resolution, so the numbers are those ``evaluate.py`` reports for the same weights.
    Returns (metrics on rank 0 / None elsewhere, up to ``panels`` uint8 [3,S,4S] panels from rank 0).
    """
    was_training = model.training
    model.eval()
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        generator=torch.Generator().manual_seed(0))  # not the global RNG (exact resume)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext())
    stats, shown = {}, []
    try:
        for batch in loader:
            with autocast:
                logits = predict_logits(model, batch["image"].to(device), batch["depth"].to(device))
            probs = logits.float().sigmoid()
            for i, name in enumerate(batch["name"]):
                h, w = (int(v) for v in batch["orig_size"][i])
                full = F.interpolate(probs[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)
                pred_u8 = probs_to_u8(full[0, 0].clamp(0, 1).cpu().numpy())
                sample = dataset.samples[dataset.samples_index[name]]
                stats[name] = image_statistics(pred_u8, read_gray_u8(sample.mask), with_hce)
                if ctx.is_main and len(shown) < panels:
                    shown.append(_panel(batch["image"][i], batch["depth"][i], batch["mask"][i], probs[i]))
                if progress is not None:
                    progress()
    finally:
        model.train(was_training)
    gathered = gather_objects(ctx, stats)
    if not ctx.is_main:
        return None, shown
    evaluator = Evaluator(hce=with_hce)
    for part in gathered:
        for name, s in part.items():
            evaluator.add_statistics(name, s)
    return evaluator.compute()["metrics"], shown


def panel_grid(panels: list[torch.Tensor]) -> np.ndarray:
    """Stack panels vertically: uint8 [H,W,3] for image files."""
    return torch.cat(panels, dim=1).permute(1, 2, 0).numpy()
