"""PDFNet model components and the factory that builds them from a config."""

from __future__ import annotations

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


__all__ = ["PDFNet", "build_model", "count_parameters"]
