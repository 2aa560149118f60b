"""Depth Anything V2 checkpoints on the Hugging Face Hub, by size (importable without torch, for CLI choices)."""

MODEL_IDS = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}
