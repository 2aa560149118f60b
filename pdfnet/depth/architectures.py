"""The real architectures of the Depth Anything V2 generators the paper uses (PDFNet-S/B/L), built from transformers
configs with random weights: for timing a photo end to end without downloading any weights (the arithmetic, and so
the time, does not depend on the weights' values).

The configs are those of the hub models ``depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf``: a DINOv2 ViT-S/B/L
(patch 14) with a DPT head.
"""

from __future__ import annotations

import os
from pathlib import Path

# size -> (ViT hidden size, layers, heads, output layers, DPT neck sizes, fusion size); ViT MLP = 4 x hidden.
DEPTH_ANYTHING_V2 = {
    "small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


def depth_anything_v2_config(size: str):
    """The transformers ``DepthAnythingConfig`` of Depth Anything V2 ``small``/``base``/``large``."""
    import transformers

    hidden, layers, heads, out_indices, neck, fusion = DEPTH_ANYTHING_V2[size]
    backbone = transformers.Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                         intermediate_size=4 * hidden, image_size=518, patch_size=14,
                                         out_indices=out_indices, reshape_hidden_states=False)
    return transformers.DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=neck,
                                            fusion_hidden_size=fusion, reassemble_hidden_size=hidden,
                                            head_hidden_size=32, depth_estimation_type="relative")


def save_random_depth_anything_v2(size: str, folder: str | os.PathLike) -> Path:
    """Depth Anything V2 ``size`` with random weights, saved in the ``save_pretrained`` layout (a folder
    ``--depth_model`` takes): for timing only, its maps mean nothing."""
    import transformers

    transformers.DepthAnythingForDepthEstimation(depth_anything_v2_config(size)).save_pretrained(folder)
    return Path(folder)
