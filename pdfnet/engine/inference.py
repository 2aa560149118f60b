"""Inference at any image size: resize to the model size, predict (optionally with test-time augmentation), resize
the probabilities back to the image's size; batched, under autocast, or tiled (tiling.py) for very large images.

TTA is the official evaluation's protocol: horizontal flip x scales {0.75, 1, 1.25} (bilinear, no corner alignment),
logits brought back to the model size and un-flipped, averaged, then the sigmoid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data.dataset import imagenet_normalisation
from ..device import autocast, half_dtype, resolve_device  # noqa: F401 - re-exported for callers
from ..models import PDFNet
from .checkpoint import model_from_checkpoint

TTA_SCALES = (0.75, 1.0, 1.25)


def load_model(path: str | os.PathLike, device: str | torch.device = "auto",
               impl: str | None = None) -> tuple[PDFNet, Config]:
    """Our checkpoint, an official one (converted on the fly), a ``save_pretrained`` folder or a hub id -> (model in
    eval mode on ``device``, in the implementation ``model.impl`` (or ``impl``) picks there; config)."""
    device = resolve_device(device) if isinstance(device, str) else device
    model, cfg = model_from_checkpoint(path, device, impl)
    return model.eval(), cfg


def to_model_inputs(image_rgb: np.ndarray, depth: np.ndarray, size: int | tuple[int, int],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB [H,W,3] and depth float [H,W] -> image [1,3,S,S] ImageNet-normalised, depth [1,1,S,S].

    ``size`` is S or (S_h, S_w). The uint8 image travels to the device before it is converted (4x less traffic).
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    image_rgb = np.ascontiguousarray(image_rgb)
    if not image_rgb.flags.writeable:  # e.g. np.asarray(PIL image): torch warns about read-only arrays
        image_rgb = image_rgb.copy()
    image = torch.from_numpy(image_rgb).to(device).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    mean, std = imagenet_normalisation(torch.device(device))  # on the device once, not copied per image
    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)).to(device)[None, None]
    depth_t = F.interpolate(depth_t, size=size, mode="bilinear", align_corners=False)
    return (image - mean) / std, depth_t


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return x
    size = [int(round(s * scale / 64)) * 64 for s in x.shape[-2:]]  # keep the model's multiple-of-64 rule
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, image: torch.Tensor, depth: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Main-output logits [B,1,S,S] (float32) for model-size inputs; with ``tta`` the mean over flip x scales."""
    if not tta:
        return model(image, depth)[0].float()
    size = image.shape[-2:]
    total = None
    for flip in (False, True):
        img, dep = (image.flip(-1), depth.flip(-1)) if flip else (image, depth)
        for scale in TTA_SCALES:
            logits = model(_scaled(img, scale), _scaled(dep, scale))[0].float()
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False) if scale != 1 else logits
            logits = logits.flip(-1) if flip else logits
            total = logits if total is None else total + logits
    return total / (2 * len(TTA_SCALES))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict_model_size(model: torch.nn.Module, images: Sequence[np.ndarray], depths: Sequence[np.ndarray],
                       size: int, tta: bool = False, half: bool = False) -> torch.Tensor:
    """Probabilities [N,1,S,S] (float32, on the model's device) of N images (any sizes) resized to S x S and run
    as one batch. The model normalises depth per sample, so a result does not depend on its batch-mates."""
    device = model_device(model)
    pairs = [to_model_inputs(im, de, size, device) for im, de in zip(images, depths)]
    image = torch.cat([p[0] for p in pairs])
    depth = torch.cat([p[1] for p in pairs])
    del pairs
    with autocast(device, half):
        return predict_logits(model, image, depth, tta).sigmoid_()


def probability_agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """How far two probability maps of the same shape (e.g. float32 and bf16 inference) are apart: the largest
    |difference| and the IoU of their masks at 0.5 (1.0 when both masks are empty)."""
    reference, other = reference.float(), other.float()
    a, b = reference > 0.5, other > 0.5
    union = int((a | b).sum())
    return {"max_abs_prob_diff": float((reference - other).abs().max()),
            "mask_iou_at_0.5": float((a & b).sum()) / union if union else 1.0}


def half_precision_agreement(model: torch.nn.Module, images: Sequence[np.ndarray], depths: Sequence[np.ndarray],
                             size: int) -> list[dict[str, float]]:
    """:func:`probability_agreement` of ``--half`` inference (bf16/fp16 autocast where the device runs it
    natively, see ``device.autocast``) with float32, one entry per image, each run at ``size``²."""
    out = []
    for image, depth in zip(images, depths):
        full = predict_model_size(model, [image], [depth], size, half=False)
        half = predict_model_size(model, [image], [depth], size, half=True)
        out.append(probability_agreement(full, half))
    return out


def probs_at_size(probs: torch.Tensor, height: int, width: int) -> np.ndarray:
    """[1,S_h,S_w] or [1,1,S_h,S_w] probabilities -> float32 [height,width] numpy in [0,1]."""
    probs = probs.reshape(1, 1, *probs.shape[-2:])
    probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return probs[0, 0].clamp_(0, 1).cpu().numpy()


def predict_probs(model: torch.nn.Module, image_rgb: np.ndarray, depth: np.ndarray, size: int = 1024,
                  tta: bool = False, half: bool = False) -> np.ndarray:
    """Foreground probabilities float32 [H,W] at the image's own size for one uint8 RGB image and its depth."""
    probs = predict_model_size(model, [image_rgb], [depth], size, tta, half)
    return probs_at_size(probs[0], *image_rgb.shape[:2])
