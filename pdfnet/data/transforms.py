"""Joint augmentations for (image, depth, mask[, depth target]): the official training recipe (dataloaders/
Mydataset.py, ``build_dataset``), with every random draw taken from an explicit generator (reproducible, resumable).

Geometric transforms move all maps together; photometric ones touch the image only. Maps are float tensors
[C,S,S] in [0,1]. Adopted from the official recipe, in its order and with its probabilities:

* horizontal flip (p 0.5);
* rotation by an integer angle in [-30, 30) with nearest-neighbour sampling, then a centre crop of the largest
  axis-aligned square inside the rotated frame, resized back (p 0.5);
* colour enhancement: PIL brightness x[0.5,1.5], contrast x[0.5,1.5], colour x[0,2], sharpness x[0,3] (p 0.5);
* grayscale (p 0.25);
* centre "up-crop": a centre window up to ``crop_border`` px smaller, resized back with bilinear align_corners
  (p 0.5).

Not adopted: the official code defines affine, perspective, noise, edge and background-swap transforms that its
training recipe does not use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..config import AugmentConfig

GEOMETRIC_KEYS = ("image", "depth", "mask", "depth_target")


def _rotate_and_crop(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate [C,H,W] (nearest), crop the centred square inscribed in the rotated frame, resize back."""
    _, h, w = x.shape
    rotated = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST)
    theta = math.radians(abs(angle) % 180)
    theta = min(theta, math.pi - theta)
    side = int(h / (math.cos(theta) + math.sin(theta)))
    top, left = (h - side) // 2, (w - side) // 2
    crop = rotated[:, top:top + side, left:left + side]
    return TF.resize(crop, [h, w], antialias=True)


def _centre_crop_resize(x: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    _, h, w = x.shape
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = x[:, top:top + crop_h, left:left + crop_w]
    return F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=True)[0]


def _colour_enhance(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    pil = Image.fromarray((image * 255).clamp(0, 255).byte().permute(1, 2, 0).numpy(), "RGB")
    for enhancer, (lo, hi) in ((ImageEnhance.Brightness, (5, 15)), (ImageEnhance.Contrast, (5, 15)),
                               (ImageEnhance.Color, (0, 20)), (ImageEnhance.Sharpness, (0, 30))):
        pil = enhancer(pil).enhance(int(rng.integers(lo, hi + 1)) / 10.0)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0


class JointAugment:
    """Applies the recipe to a sample dict with keys ``image`` [3,S,S] and any of ``depth``, ``mask``,
    ``depth_target`` [1,S,S]. ``rng`` decides every random choice."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if not cfg.enabled:
            return sample
        maps = [k for k in GEOMETRIC_KEYS if k in sample]
        out = dict(sample)
        if rng.random() < cfg.hflip_p:
            for k in maps:
                out[k] = out[k].flip(-1)
        if rng.random() < cfg.rotate_p:
            angle = float(rng.integers(-cfg.rotate_max_deg, cfg.rotate_max_deg))
            for k in maps:
                out[k] = _rotate_and_crop(out[k], angle)
        if rng.random() < cfg.colour_p:
            out["image"] = _colour_enhance(out["image"], rng)
        if rng.random() < cfg.gray_p:
            out["image"] = TF.rgb_to_grayscale(out["image"], num_output_channels=3)
        if rng.random() < cfg.crop_p and cfg.crop_border > 0:
            _, h, w = out["image"].shape
            crop_w = int(rng.integers(max(1, w - cfg.crop_border), w))
            crop_h = int(rng.integers(max(1, h - cfg.crop_border), h))
            for k in maps:
                out[k] = _centre_crop_resize(out[k], crop_h, crop_w)
        return out
