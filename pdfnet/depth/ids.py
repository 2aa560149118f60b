"""The pseudo-depth generators by name (importable without torch, for command-line choices and the docs' table).

PDFNet needs a relative depth map where near is bright (1) and far is dark (0), as Depth Anything gives. Any
``transformers`` depth-estimation model works (:class:`pdfnet.depth.DepthEstimator`): models that output metric
depth (metres, near = small) are inverted before the per-image min-max normalisation. The paper's variants are named
by their generator: PDFNet-S/B/L = Depth Anything V2 Small/Base/Large.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generator:
    hub_id: str
    family: str
    licence: str  # of the weights, as their hub page states it
    output: str  # "relative" (disparity-like: near = large) or "metric" (depth in metres: near = small; inverted)
    paper: str = ""  # the paper's variant that uses it


GENERATORS = {
    "small": Generator("depth-anything/Depth-Anything-V2-Small-hf", "Depth Anything V2 Small", "Apache-2.0",
                       "relative", "PDFNet-S"),
    "base": Generator("depth-anything/Depth-Anything-V2-Base-hf", "Depth Anything V2 Base", "CC-BY-NC-4.0",
                      "relative", "PDFNet-B"),
    "large": Generator("depth-anything/Depth-Anything-V2-Large-hf", "Depth Anything V2 Large", "CC-BY-NC-4.0",
                       "relative", "PDFNet-L"),
    "v1-small": Generator("LiheYoung/depth-anything-small-hf", "Depth Anything V1 Small", "Apache-2.0", "relative"),
    "v1-base": Generator("LiheYoung/depth-anything-base-hf", "Depth Anything V1 Base", "Apache-2.0", "relative"),
    "v1-large": Generator("LiheYoung/depth-anything-large-hf", "Depth Anything V1 Large", "Apache-2.0", "relative"),
    "dpt-large": Generator("Intel/dpt-large", "DPT Large (MiDaS 3.0)", "Apache-2.0", "relative"),
    "zoedepth": Generator("Intel/zoedepth-nyu-kitti", "ZoeDepth NYU+KITTI", "MIT", "metric"),
    "depth-pro": Generator("apple/DepthPro-hf", "Depth Pro", "Apple ML Research (research use)", "metric"),
    "prompt-depth-anything": Generator("depth-anything/prompt-depth-anything-vitl-hf",
                                       "Prompt Depth Anything ViT-L (no prompt)", "see its hub page", "metric"),
    # The output kind above is what the docs show; at run time it is read from the model's own config.
}
# The paper's variants: PDFNet-S/B/L differ only in the depth generator (5.7 / 4.5 / 3.9 FPS on an RTX 4090,
# depth included; depth's share 47 / 91 / 127 ms).
PRESETS = {"S": "small", "B": "base", "L": "large"}
PAPER_FPS = {"small": 5.7, "base": 4.5, "large": 3.9}
MODEL_IDS = {name: g.hub_id for name, g in GENERATORS.items()}


def resolve_generator(name: str) -> str:
    """A generator name (``large``, ``v1-small``...), a paper preset (``S``/``B``/``L``, ``PDFNet-L``) -> its hub
    id; anything else (a folder, another hub id) is returned as it is."""
    preset = name.removeprefix("PDFNet-")
    return MODEL_IDS.get(PRESETS.get(preset, name), name)
