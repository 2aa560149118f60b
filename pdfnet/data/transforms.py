"""Joint augmentations for (image, depth, mask[, depth target]): the official training recipe (dataloaders/
Mydataset.py, ``build_dataset``), with every random draw taken from an explicit generator (reproducible, resumable).

Geometric transforms move all maps together; photometric ones touch the image only. Maps are the integer arrays a
sample is stored as (image uint8 [S,S,3], mask uint8 [S,S], depth maps uint16 [S,S]) and stay integer throughout:
OpenCV warps them in their own type (the official loader also augments 8-bit PIL images), so no float copy of a
1024² sample is made. Adopted from the official recipe, in its order and with its probabilities:

* horizontal flip (p 0.5);
* rotation by an integer angle in [-30, 30) about the centre with nearest-neighbour sampling, then a centre crop of
  the largest axis-aligned square inside the rotated frame, resized back bilinearly (p 0.5);
* colour enhancement: PIL's brightness x[0.5,1.5], contrast x[0.5,1.5], colour x[0,2], sharpness x[0,3] (p 0.5;
  PIL's formulas, computed with OpenCV kernels);
* grayscale (p 0.25);
* centre "up-crop": a centre window up to ``crop_border`` px smaller, resized back with bilinear align_corners
  (p 0.5).

Not adopted: the official code defines affine, perspective, noise, edge and background-swap transforms that its
training recipe does not use.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..config import AugmentConfig

GEOMETRIC_KEYS = ("image", "depth", "mask", "depth_target")


def inscribed_side(size: int, angle: float) -> int:
    """Side of the largest axis-aligned square inside a ``size`` square rotated by ``angle`` degrees."""
    theta = math.radians(abs(angle) % 180)
    theta = min(theta, math.pi - theta)
    return int(size / (math.cos(theta) + math.sin(theta)))


def rotate_and_crop(x: np.ndarray, angle: float) -> np.ndarray:
    """Rotate [H,W(,C)] counter-clockwise by ``angle`` about the centre (nearest; outside = 0), crop the centred
    inscribed square, resize it back to [H,W] (bilinear, half-pixel centres)."""
    h, w = x.shape[:2]
    rotation = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    rotated = cv2.warpAffine(x, rotation, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
    side = inscribed_side(h, angle)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(rotated[top:top + side, left:left + side], (w, h), interpolation=cv2.INTER_LINEAR)


def centre_crop_resize(x: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """The centred crop_h x crop_w window of [H,W(,C)] resized back to [H,W], bilinear with corners aligned (as
    ``F.interpolate(align_corners=True)``): output pixel (i, j) samples the window at (i·(ch-1)/(H-1), ...)."""
    h, w = x.shape[:2]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    to_source = np.array([[(crop_w - 1) / (w - 1), 0, left], [0, (crop_h - 1) / (h - 1), top]], np.float64)
    return cv2.warpAffine(x, to_source, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # PIL's ImageFilter.SMOOTH


def _blend(image: np.ndarray, factor: float, degenerate: np.ndarray | None = None, constant: float = 0.0):
    """PIL's ``Image.blend(degenerate, image, factor)`` = degenerate + factor·(image − degenerate), clipped and
    truncated to uint8; ``degenerate`` an array like ``image``, or the constant ``constant`` when None. (The -0.499
    makes OpenCV's round-to-nearest a truncation, as PIL's.)"""
    if degenerate is None:
        return cv2.addWeighted(image, factor, image, 0.0, (1 - factor) * constant - 0.499)
    return cv2.addWeighted(image, factor, degenerate, 1 - factor, -0.499)


def colour_enhance(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PIL's brightness, contrast, colour and sharpness enhancements (ImageEnhance) of uint8 RGB [H,W,3], each with
    a factor drawn from ``rng``, computed with OpenCV kernels (the same formulas; within one 8-bit level of PIL)."""
    factors = [int(rng.integers(lo, hi + 1)) / 10.0 for lo, hi in ((5, 15), (5, 15), (0, 20), (0, 30))]
    brightness, contrast, colour, sharpness = factors
    image = _blend(image, brightness)  # degenerate: black
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    image = _blend(image, contrast, constant=int(cv2.mean(luma)[0] + 0.5))  # degenerate: the mean gray
    image = _blend(image, colour, cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB))
    smooth = cv2.filter2D(image, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = image[0], image[-1], image[:, 0], image[:, -1]  # as PIL
    return _blend(image, sharpness, smooth)


def grayscale(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H,W,3] -> its luma (ITU-R 601-2) in all three channels."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


class JointAugment:
    """Applies the recipe to a sample dict with ``image`` uint8 [S,S,3] and any of ``depth``, ``mask``,
    ``depth_target`` (uint8/uint16 [S,S]). ``rng`` decides every random choice, drawn in the recipe's order."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, sample: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if not cfg.enabled:
            return sample
        maps = [k for k in GEOMETRIC_KEYS if k in sample]
        out = dict(sample)
        if rng.random() < cfg.hflip_p:
            for k in maps:
                out[k] = cv2.flip(out[k], 1)
        if rng.random() < cfg.rotate_p:
            angle = float(rng.integers(-cfg.rotate_max_deg, cfg.rotate_max_deg))
            for k in maps:
                out[k] = rotate_and_crop(out[k], angle)
        if rng.random() < cfg.colour_p:
            out["image"] = colour_enhance(out["image"], rng)
        if rng.random() < cfg.gray_p:
            out["image"] = grayscale(out["image"])
        if rng.random() < cfg.crop_p and cfg.crop_border > 0:
            h, w = out["image"].shape[:2]
            crop_w = int(rng.integers(max(1, w - cfg.crop_border), w))
            crop_h = int(rng.integers(max(1, h - cfg.crop_border), h))
            for k in maps:
                out[k] = centre_crop_resize(out[k], crop_h, crop_w)
        return out
