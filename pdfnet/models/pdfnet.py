"""PDFNet: RGB + pseudo-depth at half resolution and an 8x8 grid of full-resolution patches through one shared
encoder, fused by FSE blocks into a full-resolution mask.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Mapping

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import GRAD_CHECKPOINTING, ModelConfig
from ..ops import checkpointed, normalize_depth, resize, resize_like
from ..registry import BACKBONES
from ..variants import official_version
from .blocks import ConvNormAct
from .decoder import DepthDecoder, Pyramid, SegmentationDecoder
from .fusion import CoA


def split_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut [B,C,H,W] into a grid x grid of patches -> [grid*grid*B, C, H/grid, W/grid].

    Batch order is (row, column, sample), as the official ``split``: patch (r, c) of sample b is at
    ``(r * grid + c) * B + b``.
    """
    b, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    x = x.view(b, c, grid, ph, grid, pw).permute(2, 4, 0, 1, 3, 5)
    return x.reshape(grid * grid * b, c, ph, pw)


def merge_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`split_grid`: [grid*grid*B, C, h, w] -> [B, C, grid*h, grid*w]."""
    n, c, h, w = x.shape
    b = n // (grid * grid)
    return x.view(grid, grid, b, c, h, w).permute(2, 3, 0, 4, 1, 5).reshape(b, c, grid * h, grid * w)


class PDFNet(nn.Module, PyTorchModelHubMixin, library_name="pdfnet", license="mit", pipeline_tag="image-segmentation",
             paper_url="https://arxiv.org/abs/2503.06100", tags=["dichotomous-image-segmentation", "pdfnet"]):
    """The PDFNet segmentation network. The arguments are the architecture keys of ``model:`` in the config
    (:class:`pdfnet.config.ModelConfig`); ``pdfnet.build.build_model`` builds it from a config.

    Args:
        backbone: a name of :data:`pdfnet.registry.BACKBONES` (the paper: ``swin_base_patch4_window12_384``;
            ``timm/<name>`` for any timm model).
        emb_dim: decoder width (128 in the paper).
        variant: official code version reproduced, ``"v2026"`` or ``"v2025.03"`` (see :mod:`pdfnet.variants`).
        depth_head: build the auxiliary depth decoder (needed for the SiLog loss in training).
        drop_path: stochastic depth of the encoder (0.1 in the official recipe).
        detach_patches: block gradients through the patch stream as the official code does (@torch.no_grad on
            split/merge); set False to train the patch branch end to end.
        fusion: a name of :data:`pdfnet.registry.FUSIONS` (the paper: ``fse``).
        fusion_dropout: dropout inside every CoA block (official: 0.1; training only).
        use_depth / use_patches: ablations: feed zeros instead of the depth map / of the patch branch.
        grad_checkpointing: ``none``, ``encoder`` or ``all`` (see :meth:`set_grad_checkpointing`).
        patch_grid: patches per side of the full-resolution grid (8).
    """

    def __init__(self, backbone: str = "swin_base_patch4_window12_384", emb_dim: int = 128, variant: str = "v2026",
                 depth_head: bool = True, drop_path: float = 0.1, detach_patches: bool = True, fusion: str = "fse",
                 fusion_dropout: float = 0.1, use_depth: bool = True, use_patches: bool = True,
                 grad_checkpointing: str = "none", patch_grid: int = 8) -> None:
        super().__init__()
        official_version(variant)  # a clear error for an unknown version
        self.variant, self.patch_grid, self.detach_patches = variant, patch_grid, detach_patches
        self.use_depth, self.use_patches = use_depth, use_patches
        self.backbone = BACKBONES.get(backbone)(drop_path=drop_path)
        # Encoder stage i (C_i channels) -> emb_dim; then a global feature from all four stages.
        self.stage_mixers = nn.ModuleList(ConvNormAct(ch, emb_dim) for ch in self.backbone.channels)
        self.global_mixer = ConvNormAct(4 * emb_dim, emb_dim)
        self.global_refine = nn.Sequential(ConvNormAct(emb_dim, emb_dim))
        self.decoder = SegmentationDecoder(emb_dim, variant, patch_grid, detach_patches, fusion=fusion)
        self.depth_decoder = DepthDecoder(emb_dim, variant) if depth_head else None
        self._init_non_backbone()
        self.set_fusion_dropout(fusion_dropout)
        self.set_grad_checkpointing(grad_checkpointing)

    @classmethod
    def from_config(cls, cfg: ModelConfig, state: Mapping[str, torch.Tensor] | None = None) -> PDFNet:
        """The model of ``cfg`` (its keys that are constructor arguments). Without ``state``: random init, then
        ``cfg.pretrained`` ImageNet weights in the encoder when set. With ``state``: built around those weights
        (strict: every key, every shape; RuntimeError otherwise) without first initialising random ones."""
        kwargs = {name: getattr(cfg, name) for name in architecture_keys()}
        if state is None:
            model = cls(**kwargs)
            if cfg.pretrained:
                model.backbone.load_pretrained(cfg.pretrained)
            return model
        with parameters_on_meta():
            model = cls(**kwargs)
        model.load_state_dict(dict(state), strict=True, assign=True)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        revision: str | None = None, **_: object) -> PDFNet:
        """A ``save_pretrained`` folder or a hub id -> this reference model in eval mode (strict weight loading,
        offline-safe). ``pdfnet.load_model`` gives the implementation ``model.impl`` picks for a device."""
        from ..hub_files import hub_config, read_pretrained

        cfg, state = read_pretrained(pretrained_model_name_or_path, revision=revision)
        model = cls.from_config(cfg.model, state)
        model._hub_mixin_config = hub_config(cfg)
        return model.to(device).eval()

    def generate_model_card(self, *args: object, **kwargs: object):
        """The card ``save_pretrained``/``push_to_hub`` write (see :func:`pdfnet.card.model_card`)."""
        from huggingface_hub import ModelCard

        from ..card import model_card

        return ModelCard(model_card(self._hub_mixin_config, n_parameters=count_parameters(self), **kwargs))

    def _init_non_backbone(self) -> None:
        # The official code initialises every conv outside the encoder with trunc_normal(0.02) and zero bias.
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("backbone."):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def has_depth_head(self) -> bool:
        return self.depth_decoder is not None

    def set_fusion_dropout(self, p: float) -> None:
        """Dropout inside every CoA cross-attention block (official: 0.1; training only)."""
        for module in self.modules():
            if isinstance(module, CoA):
                module.set_dropout(p)

    def set_grad_checkpointing(self, mode: str | bool = "encoder") -> None:
        """Which activations backward recomputes instead of keeping: ``none``; ``encoder`` (every encoder block);
        ``all`` (also the level mixers, each fusion stage and the full-resolution decoder and depth-head stages).
        Gradients are unchanged (dropout masks are replayed); ``True``/``False`` mean encoder/none."""
        if isinstance(mode, bool):
            mode = "encoder" if mode else "none"
        if mode not in GRAD_CHECKPOINTING:
            raise ValueError(f"grad_checkpointing must be one of {GRAD_CHECKPOINTING}, got {mode!r}")
        self.grad_checkpointing = mode
        self.backbone.set_grad_checkpointing(mode != "none")
        self.decoder.grad_checkpointing = mode == "all"
        if self.depth_decoder is not None:
            self.depth_decoder.grad_checkpointing = mode == "all"

    def mix_levels(self, *stage_maps: torch.Tensor) -> Pyramid:
        """Encoder stage maps -> [L1, L2, L3, L4, global], each with emb_dim channels."""
        levels = [mixer(f) for mixer, f in zip(self.stage_mixers, stage_maps)]
        top = levels[3]
        glob = self.global_refine(self.global_mixer(torch.cat([resize_like(f, top) for f in levels], dim=1)))
        return levels + [glob]

    def encode(self, x: torch.Tensor) -> Pyramid:
        """Shared encoder + channel mixers. x: [N,3,h,w] -> [L1 (h/4), L2 (h/8), L3 (h/16), L4, global (h/32)]."""
        return checkpointed(self.grad_checkpointing == "all", self.mix_levels, *self.backbone(x))

    def patch_pyramid_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Spatial sizes of the merged patch pyramid [L1..L4, global] for an h x w input."""
        sizes = [(self.patch_grid * ph, self.patch_grid * pw)
                 for ph, pw in self.backbone.feature_sizes(h // self.patch_grid, w // self.patch_grid)]
        return sizes + [sizes[-1]]

    def check_input(self, image: torch.Tensor, depth: torch.Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B,3,H,W], got {tuple(image.shape)}")
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[0] != image.shape[0] \
                or depth.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"depth must be [B,1,H,W] matching image {tuple(image.shape)}, got {tuple(depth.shape)}")
        h, w = image.shape[-2:]
        if h % 64 or w % 64 or min(h, w) < 128:
            raise ValueError(f"PDFNet needs H and W to be multiples of 64 and at least 128, got {h}x{w}; "
                             "resize the input (pdfnet.engine.inference does this for you)")

    def encode_all(self, image: torch.Tensor, depth3: torch.Tensor) -> tuple[Pyramid, Pyramid, Pyramid]:
        """(image, depth, patch) pyramids: RGB and depth at half resolution through the shared encoder as one
        batch, and the grid of full-resolution patches, merged back into maps."""
        b, _, h, w = image.shape
        half = (h // 2, w // 2)
        both = self.encode(torch.cat([resize(image, half), resize(depth3, half)], dim=0))
        img_feats, depth_feats = [f[:b] for f in both], [f[b:] for f in both]
        if not self.use_patches:  # ablation: zeros of the shapes the patch pyramid would have
            return img_feats, depth_feats, [image.new_zeros(b, f.shape[1], *size) for f, size in
                                            zip(img_feats, self.patch_pyramid_sizes(h, w))]
        # The official merge runs under @torch.no_grad, so no gradient reaches the patch pass: with detach_patches
        # the pass runs without a graph (same values, no activations kept for backward).
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_patches):
            patch_feats = [merge_grid(f, self.patch_grid) for f in self.encode(split_grid(image, self.patch_grid))]
        return img_feats, depth_feats, patch_feats

    def forward(self, image: torch.Tensor, depth: torch.Tensor,
                return_depth: bool = False) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """image: [B,3,H,W] ImageNet-normalised; depth: [B,1,H,W] any range (min-max normalised per sample here).

        Returns logits ``[main [B,1,H,W], side1..side5]``; with ``return_depth=True`` also the depth head's 5 logit
        maps (``(seg_logits, depth_logits)``).
        """
        self.check_input(image, depth)
        depth3 = normalize_depth(depth).expand(-1, 3, -1, -1)
        if not self.use_depth:
            depth3 = torch.zeros_like(depth3)
        img_feats, depth_feats, patch_feats = self.encode_all(image, depth3)
        seg_logits = self.decoder(image, depth3, img_feats, depth_feats, patch_feats)
        if not return_depth:
            return seg_logits
        if self.depth_decoder is None:
            raise RuntimeError("return_depth=True needs the depth head (model.depth_head: true)")
        return seg_logits, self.depth_decoder(image, depth3, img_feats, depth_feats, patch_feats)


def architecture_keys() -> tuple[str, ...]:
    """The :class:`~pdfnet.config.ModelConfig` keys that are constructor arguments of :class:`PDFNet`."""
    params = inspect.signature(PDFNet.__init__).parameters
    return tuple(f for f in ModelConfig.__dataclass_fields__ if f in params)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory, no random init) while buffers are
    made as usual: derived buffers (relative-position indices, here or in a timm backbone) stay correct when the
    parameters are then assigned from a checkpoint."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
