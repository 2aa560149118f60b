"""What predict writes (mask, cut-out, overlay), and cut-outs that look right: the foreground's own colour in the
soft edge, and compositing onto a new background.

A photo pixel in the soft edge (hair, fur, a motion-blurred wire) is ``I = a·F + (1 − a)·B``. Cutting out ``I`` with
alpha ``a`` keeps ``(1 − a)·B`` in it: a halo of the old background. :func:`estimate_foreground` estimates ``F``
with the blur-fusion estimator of Forte & Pitié, "Approximate Fast Foreground Colour Estimation" (ICIP 2021): local
means of foreground and background colours, weighted by alpha, corrected so that the composite stays ``I``; a coarse
pass (radius 90) then a fine one (radius 6). Box blurs by cumulative sums: O(pixels) at any radius, on CPU or GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

OUTPUT_FORMATS = ("mask", "rgba", "overlay")  # what predict writes
FOREGROUND_METHODS = ("fast", "none")
RADII = (90, 6)  # coarse, then fine (the paper's two passes)


def _box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)² window clipped to the image, for x [C,H,W]: each pixel averages the pixels of its window
    that exist (no padding values enter)."""
    import torch

    out = x
    for dim in (1, 2):
        n = out.shape[dim]
        zero = torch.zeros_like(out.narrow(dim, 0, 1))
        csum = torch.cat([zero, out.cumsum(dim)], dim)
        idx = torch.arange(n, device=x.device)
        hi = (idx + radius + 1).clamp(max=n)
        lo = (idx - radius).clamp(min=0)
        shape = [1, 1, 1]
        shape[dim] = n
        count = (hi - lo).to(x.dtype).view(shape)
        out = (csum.index_select(dim, hi) - csum.index_select(dim, lo)) / count
    return out


def _blur_fusion(image: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor, radius: int,
                 eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass for [3,H,W] colours and [1,H,W] alpha: (foreground, background) estimates."""
    mean_alpha = _box_blur(alpha, radius)
    mean_fg = _box_blur(fg * alpha, radius) / (mean_alpha + eps)
    mean_bg = _box_blur(bg * (1 - alpha), radius) / ((1 - mean_alpha) + eps)
    fg = mean_fg + alpha * (image - alpha * mean_fg - (1 - alpha) * mean_bg)
    return fg.clamp(0, 1), mean_bg


def estimate_foreground(image, alpha, radii: tuple[int, ...] = RADII):
    """The foreground colours of ``image`` under ``alpha``.

    image: [H,W,3] float in [0,1]; alpha: [H,W] float in [0,1]; numpy arrays (float32 returned as numpy) or torch
    tensors on any device (a tensor on the same device returned). Returns foreground [H,W,3] float32 in [0,1]: where
    alpha is 1 it is the image; in the soft edge it is the colour the object has there, without the background's.
    """
    import torch  # here, not at the top: the commands' --help and argument errors do not load torch
    as_numpy = not isinstance(image, torch.Tensor)
    img = torch.as_tensor(np.asarray(image) if as_numpy else image).float()
    a = torch.as_tensor(np.asarray(alpha) if not isinstance(alpha, torch.Tensor) else alpha).float().to(img.device)
    if img.ndim != 3 or img.shape[2] != 3 or a.shape != img.shape[:2]:
        raise ValueError(f"estimate_foreground wants image [H,W,3] and alpha [H,W]; got {tuple(img.shape)} and "
                         f"{tuple(a.shape)}")
    img = img.permute(2, 0, 1).clamp(0, 1)
    a = a[None].clamp(0, 1)
    fg, bg = img, img
    for radius in radii:
        fg, bg = _blur_fusion(img, fg, bg, a, radius)
    fg = fg.permute(1, 2, 0).contiguous()
    return fg.cpu().numpy() if as_numpy else fg


def parse_background(text: str) -> tuple[int, int, int] | str:
    """``--background``: a colour (``white``, ``black``, ``#RRGGBB``, ``R,G,B``) or an image file path."""
    from PIL import ImageColor

    if "," in text:
        parts = text.split(",")
        if len(parts) == 3 and all(p.strip().isdigit() and 0 <= int(p) <= 255 for p in parts):
            return tuple(int(p) for p in parts)
        raise ValueError(f"--background {text!r}: a colour as R,G,B takes three integers 0-255")
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        return text  # a path: read (and checked) by the caller


def cut_out(image_u8: np.ndarray, mask_u8: np.ndarray, foreground: str = "fast",
            background: tuple[int, int, int] | np.ndarray | None = None) -> np.ndarray:
    """What ``--format rgba`` writes: [H,W,4] uint8, the foreground colours (``fast``: :func:`estimate_foreground`;
    ``none``: the photo's own) with the mask as alpha; or, with a ``background`` (an RGB colour or an [H,W,3] uint8
    image of the photo's size), [H,W,3] uint8 composited onto it."""
    if foreground not in FOREGROUND_METHODS:
        raise ValueError(f"foreground must be one of {FOREGROUND_METHODS}, got {foreground!r}")
    alpha = mask_u8.astype(np.float32) / 255.0
    image = image_u8.astype(np.float32) / 255.0
    fg = estimate_foreground(image, alpha) if foreground == "fast" else image
    if background is None:
        return np.dstack([np.round(fg * 255).astype(np.uint8), mask_u8])
    bg = np.broadcast_to(np.asarray(background, np.float32) / 255.0, image.shape)
    return np.round((fg * alpha[..., None] + bg * (1 - alpha[..., None])) * 255).clip(0, 255).astype(np.uint8)


def read_background(spec: str) -> tuple[int, int, int] | np.ndarray:
    """``--background`` as :func:`cut_out` takes it: an RGB colour, or the image file's pixels (uint8 [H,W,3])."""
    from ..data.io import read_rgb_u8

    value = parse_background(spec)
    return value if isinstance(value, tuple) else read_rgb_u8(value)


def render(image_u8: np.ndarray, mask_u8: np.ndarray, fmt: str, foreground: str = "fast",
           background: tuple[int, int, int] | np.ndarray | None = None) -> np.ndarray:
    """What predict writes for a format: ``mask`` [H,W] uint8; ``rgba`` :func:`cut_out` (a background image is
    resized to the photo); ``overlay`` [H,W,3] uint8, the mask tinted red over the image."""
    if fmt == "mask":
        return mask_u8
    if fmt == "overlay":
        alpha = (mask_u8.astype(np.float32) / 255.0)[..., None]
        tint = np.array([255, 40, 40], np.float32)
        return (image_u8 * (1 - 0.6 * alpha) + tint * 0.6 * alpha).clip(0, 255).astype(np.uint8)
    if fmt != "rgba":
        raise ValueError(f"unknown output format {fmt!r}; expected one of {OUTPUT_FORMATS}")
    if isinstance(background, np.ndarray) and background.shape[:2] != image_u8.shape[:2]:
        import cv2

        background = cv2.resize(background, (image_u8.shape[1], image_u8.shape[0]), interpolation=cv2.INTER_AREA)
    return cut_out(image_u8, mask_u8, foreground, background)


__all__ = ["FOREGROUND_METHODS", "OUTPUT_FORMATS", "cut_out", "estimate_foreground", "parse_background",
           "read_background", "render"]
