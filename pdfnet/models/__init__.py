"""PDFNet, the paper in plain PyTorch: one file per component.

    blocks.py         RMSNorm, the conv-norm-SiLU unit, SwiGLU
    backbone.py       the detection-style Swin encoder (timm_backbone.py: any timm model; pretrained.py: ImageNet
                      weights)
    fusion.py         CoA cross-attention, BIS boundary/integrity split, the FSE block (concat_fusion.py: an ablation)
    decoder.py        the segmentation decoder with side outputs, the auxiliary depth decoder
    pdfnet.py         PDFNet: half-resolution RGB + depth, 8x8 full-resolution patches, decode
    official.py       official checkpoints: key mapping, version detection, strict loading

``pdfnet.build.build_model(cfg, device)`` builds the model of a config for a device (``model.impl``: this reference
model, or the CPU drop-ins of :mod:`pdfnet.lean`, which keep these state-dict keys).
"""

from __future__ import annotations

from .pdfnet import PDFNet, count_parameters

__all__ = ["PDFNet", "count_parameters"]
