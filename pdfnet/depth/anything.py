"""Pseudo-depth maps as PDFNet expects them (1 = nearest, per-image min-max normalised), from Depth Anything or any
``transformers`` depth-estimation model.

For Depth Anything (V1 and V2, relative depth), pre-processing is Depth Anything V2's own ``infer_image`` (not the
transformers image processor, whose resize keeps the aspect ratio differently): RGB in [0,1], aspect-preserving
bicubic resize so that both sides are at least ``input_size`` (518) and multiples of 14, ImageNet normalisation; the
predicted relative depth (larger = nearer) is resized back to the image with bilinear ``align_corners=True`` and
min-max normalised per image to [0,1], as the official preparation notebook does before saving.

Any other depth-estimation architecture (DPT, ZoeDepth, Depth Pro, Prompt Depth Anything without a prompt, ...) runs
with its own image processor and post-processing (``post_process_depth_estimation``, back at the image's size); an
output in metres (``metric``: near = small) is inverted first, so that near is bright as PDFNet expects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..device import half_dtype, resolve_device
from ..hub_files import HubFilesError, local_model_folder
from .ids import resolve_generator

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _multiple_of(x: float, multiple: int, min_val: int) -> int:
    y = int(round(x / multiple) * multiple)
    return y if y >= min_val else int(math.ceil(x / multiple) * multiple)


def lower_bound_size(height: int, width: int, input_size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """Depth Anything V2's resize target: one scale for both sides so that each is >= ``input_size``, rounded to a
    multiple of ``multiple`` (never below ``input_size``)."""
    scale = max(input_size / height, input_size / width)
    return _multiple_of(scale * height, multiple, input_size), _multiple_of(scale * width, multiple, input_size)


def depth_autocast_dtype(device: torch.device, half: bool) -> torch.dtype | None:
    """Reduced precision for Depth Anything on GPUs only: bfloat16, or float16 where bfloat16 is emulated
    (V100, T4). None = float32."""
    return half_dtype(device) if (half and device.type == "cuda") else None


class DepthEstimator:
    """Batched Depth Anything V2 inference. ``model``: a local folder (``save_pretrained`` layout), a hub id, or one
    of ``small``/``base``/``large`` (the paper uses large). Call with uint8 RGB [H,W,3] images; returns float32 [H,W]
    maps in [0,1] (1 = nearest). ``flag`` names the option that chose ``model`` in error messages (``folder_flag``
    the one that takes a downloaded folder, ``alternative`` the way round without the model); a model
    that is neither a folder nor in the cache raises :class:`pdfnet.hub_files.HubFilesError` at once when offline."""

    def __init__(self, model: str = "large", device: str | torch.device = "auto", input_size: int = 518,
                 half: bool = True, flag: str = "--depth_model", folder_flag: str | None = None,
                 alternative: str = "") -> None:
        from transformers import AutoModelForDepthEstimation

        source = resolve_generator(model)
        folder = local_model_folder(source, required=("config.json",), what="the depth model",
                                    flag=flag, allow_patterns=["*.json", "*.safetensors"], folder_flag=folder_flag,
                                    alternative=alternative)
        try:  # safetensors only: a pickled pytorch_model.bin could run code while it loads
            self.model = AutoModelForDepthEstimation.from_pretrained(str(folder), use_safetensors=True)
        except (OSError, ValueError) as err:
            first = next(iter(str(err).strip().splitlines()), type(err).__name__)[:300]
            raise HubFilesError(f"{flag} {model}: cannot load a depth model from {folder} (a model.safetensors "
                                f"and its config.json are needed): {first}") from None
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model.to(self.device).eval()
        self.input_size = input_size
        self.autocast_dtype = depth_autocast_dtype(self.device, half)
        self.output = output_kind(self.model.config)
        self.processor = None
        if self.model.config.model_type != "depth_anything":
            from transformers import AutoImageProcessor

            self.processor = AutoImageProcessor.from_pretrained(str(folder))

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [H,W,3] -> float32 [3,h,w] network input (h, w multiples of 14, both >= input_size)."""
        h, w = lower_bound_size(*image_rgb.shape[:2], self.input_size)
        x = cv2.resize(image_rgb.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)
        return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.processor is not None:
            return [self._with_processor(image) for image in images]
        inputs = [self.preprocess(im) for im in images]
        results: list[np.ndarray | None] = [None] * len(images)
        # Images that resize to the same shape run as one batch.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.shape[1:], []).append(i)
        for indices in groups.values():
            batch = torch.from_numpy(np.stack([inputs[i] for i in indices])).to(self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                depth = self.model(pixel_values=batch).predicted_depth.float()  # [N,h,w]
            for j, i in enumerate(indices):
                h, w = images[i].shape[:2]
                d = F.interpolate(depth[j][None, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
                results[i] = near_is_one(d, self.output)
        return results  # type: ignore[return-value]

    def _with_processor(self, image: np.ndarray) -> np.ndarray:
        """One image through the model's own image processor and post-processing (other architectures)."""
        import inspect

        size = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            outputs = self.model(**inputs)
        outputs.predicted_depth = outputs.predicted_depth.float()
        post = self.processor.post_process_depth_estimation
        extra = {"source_sizes": [size]} if "source_sizes" in inspect.signature(post).parameters else {}
        depth = post(outputs, target_sizes=[size], **extra)[0]["predicted_depth"]  # padding removed (ZoeDepth)
        return near_is_one(depth.float(), self.output)


def output_kind(config) -> str:
    """``relative`` (disparity-like, near = large: Depth Anything's relative models, DPT/MiDaS) or ``metric``
    (depth in metres: ZoeDepth, Depth Pro, Prompt Depth Anything, Depth Anything's metric models, GLPN)."""
    if config.model_type in ("depth_anything", "prompt_depth_anything"):
        return "metric" if getattr(config, "depth_estimation_type", "relative") == "metric" else "relative"
    return "relative" if config.model_type == "dpt" else "metric"


def near_is_one(depth: torch.Tensor, output: str) -> np.ndarray:
    """A predicted map [H,W] -> float32 [H,W] in [0,1], 1 = nearest: metric depth inverted (1/depth, depths
    clamped at a thousandth of the farthest), then min-max normalised per image; a constant map -> zeros."""
    if output == "metric":
        depth = 1.0 / depth.clamp(min=max(float(depth.max()), 1e-6) * 1e-3)
    lo, hi = depth.min(), depth.max()
    depth = (depth - lo) / (hi - lo) if hi > lo else torch.zeros_like(depth)
    return depth.cpu().numpy()


def save_tiny_random_model(folder: str | os.PathLike) -> Path:
    """Save a tiny, randomly initialised Depth Anything V2 (a few hundred kB) to ``folder`` in the
    ``save_pretrained`` layout: for tests and self-checks of the depth pipeline without network access."""
    import transformers

    backbone = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=64, image_size=518, patch_size=14,
                                         out_features=["stage1", "stage2", "stage3", "stage4"],
                                         reshape_hidden_states=False)
    cfg = transformers.DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=16, head_hidden_size=8,
                                           neck_hidden_sizes=[8, 16, 32, 32], reassemble_hidden_size=32)
    transformers.DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    return Path(folder)


def depth_to_u16(depth: np.ndarray) -> np.ndarray:
    """[0,1] float map -> uint16 (16-bit PNG storage, lossless at the model's precision)."""
    return np.clip(np.rint(depth * 65535.0), 0, 65535).astype(np.uint16)
