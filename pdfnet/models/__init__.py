"""PDFNet model components and the factory that builds them from a config."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from .backbone import load_pretrained_backbone
from .pdfnet import PDFNet, count_parameters


def build_model(cfg: ModelConfig) -> PDFNet:
    """Build PDFNet from ``cfg``; loads ``cfg.pretrained`` Swin weights into the encoder when set."""
    model = PDFNet(backbone=cfg.backbone, emb_dim=cfg.emb_dim, variant=cfg.variant, depth_head=cfg.depth_head,
                   drop_path=cfg.drop_path, detach_patches=cfg.detach_patches)
    model.use_depth, model.use_patches = cfg.use_depth, cfg.use_patches
    model.set_fusion_dropout(cfg.fusion_dropout)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    if cfg.pretrained:
        load_pretrained_backbone(model.backbone, cfg.pretrained)
    return model


def build_model_with_weights(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> PDFNet:
    """Build ``cfg``'s model around ``state`` (strict: every key, every shape), without first allocating random
    weights; derived buffers are recomputed. Raises RuntimeError (load_state_dict's) when ``state`` does not fit."""
    with torch.device("meta"):
        model = build_model(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_derived_buffers()
    return model


__all__ = ["PDFNet", "build_model", "build_model_with_weights", "count_parameters"]
