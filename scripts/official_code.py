"""Building the official PDFNet (github.com/Tennine2077/PDFNet) from a checkout, for the comparison scripts.

The official code is never part of this repository: users clone it and pass its folder (``--official_dir``). It
needs einops; matplotlib (imported by its utilities for a debug plot only) is stubbed when absent.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path


def check_official_dir(path: str) -> str | None:
    """None if ``path`` looks like an official checkout, else the reason it does not."""
    if not (Path(path) / "models" / "PDFNet.py").is_file():
        return f"--official_dir {path}: no models/PDFNet.py there (clone github.com/Tennine2077/PDFNet)"
    return None


def build_official_model(official_dir: str, drop_path: float = 0.1):
    """The official ``PDFNet_process`` (Swin-B, emb 128) with the official random initialisation (no pretrained
    Swin download). ``drop_path`` is the Swin stochastic-depth rate (official default 0.1)."""
    sys.path.insert(0, official_dir)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.modules["matplotlib"] = types.ModuleType("matplotlib")
        sys.modules["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")
    from models.PDFNet import PDF_decoder, PDF_depth_decoder, PDFNet_process  # type: ignore[import-not-found]
    from models.swin_transformer import SwinB  # type: ignore[import-not-found]

    # The model-relevant defaults of the official argument parser (the same in both official versions).
    args = argparse.Namespace(emb=128, back_bone_channels_stage1=128, back_bone_channels_stage2=256,
                              back_bone_channels_stage3=512, back_bone_channels_stage4=1024, drop_path=drop_path,
                              DEBUG=False, device="cpu")
    return PDFNet_process(encoder=SwinB(args=args, in_chans=3, pretrained=False), decoder=PDF_decoder(args=args),
                          depth_decoder=PDF_depth_decoder(args=args), device="cpu", args=args)


def disable_dropout(model) -> None:
    """Set every dropout of the official model to 0 (its CoA blocks hard-code 0.1), so a training step is
    deterministic and can be compared gradient for gradient."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
