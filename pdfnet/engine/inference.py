"""Inference at any image size: resize to the model size, predict (optionally with test-time augmentation), resize
the probabilities back to the image's size.

TTA is the official evaluation's protocol: horizontal flip x scales {0.75, 1, 1.25} (bilinear, no corner alignment),
logits brought back to the model size and un-flipped, averaged, then the sigmoid.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..models import PDFNet
from .checkpoint import model_from_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TTA_SCALES = (0.75, 1.0, 1.25)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def load_model(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[PDFNet, Config]:
    """Our checkpoint or an official one (converted on the fly) -> (model in eval mode on ``device``, config)."""
    model, cfg = model_from_checkpoint(path)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device).eval(), cfg


def to_model_inputs(image_rgb: np.ndarray, depth: np.ndarray, size: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB [H,W,3] and depth float [H,W] -> image [1,3,S,S] ImageNet-normalised, depth [1,1,S,S]."""
    image = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)).to(device)[None, None]
    depth_t = F.interpolate(depth_t, size=(size, size), mode="bilinear", align_corners=False)
    return (image - mean) / std, depth_t


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return x
    size = [int(round(s * scale / 64)) * 64 for s in x.shape[-2:]]  # keep the model's multiple-of-64 rule
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_logits(model: PDFNet, image: torch.Tensor, depth: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Main-output logits [B,1,S,S] for model-size inputs; with ``tta`` the mean logits over flip x scales."""
    if not tta:
        return model(image, depth)[0]
    size = image.shape[-2:]
    total = None
    for flip in (False, True):
        img, dep = (image.flip(-1), depth.flip(-1)) if flip else (image, depth)
        for scale in TTA_SCALES:
            logits = model(_scaled(img, scale), _scaled(dep, scale))[0]
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False) if scale != 1 else logits
            logits = logits.flip(-1) if flip else logits
            total = logits if total is None else total + logits
    return total / (2 * len(TTA_SCALES))


def predict_probs(model: PDFNet, image_rgb: np.ndarray, depth: np.ndarray, size: int = 1024,
                  tta: bool = False) -> np.ndarray:
    """Foreground probabilities float32 [H,W] at the image's own size for one uint8 RGB image and its depth."""
    device = next(model.parameters()).device
    h, w = image_rgb.shape[:2]
    image, depth_t = to_model_inputs(image_rgb, depth, size, device)
    probs = predict_logits(model, image, depth_t, tta).float().sigmoid()
    probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
    return probs[0, 0].clamp_(0, 1).cpu().numpy()
