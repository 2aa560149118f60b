"""PDFNet: RGB + pseudo-depth at half resolution and an 8x8 grid of full-resolution patches through one shared Swin
encoder, fused by FSE blocks into a full-resolution mask.
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import GRAD_CHECKPOINTING
from .backbone import SWIN_SPECS, SwinEncoder, WindowAttention, relative_position_index
from .blocks import ConvNormAct, checkpointed, lean_inference, release_freed_memory, resize, resize_like
from .decoder import DepthDecoder, Pyramid, SegmentationDecoder
from .fusion import VARIANTS, CoA


def normalize_depth(depth: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each sample to [0, 1]. depth: [B,1,H,W] any range -> [B,1,H,W].

    The official code normalises over the whole batch (identical at batch 1); per sample makes a prediction
    independent of its batch-mates. A constant map becomes zeros instead of the official NaNs.
    """
    flat = depth.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = flat.max(dim=1).values.view(-1, 1, 1, 1) - lo
    return torch.where(span > 0, (depth - lo) / span.clamp_min(torch.finfo(depth.dtype).tiny), torch.zeros_like(depth))


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
    """The PDFNet segmentation network.

    Args:
        backbone: a key of :data:`SWIN_SPECS` (``swin_base_patch4_window12_384`` for the paper).
        emb_dim: decoder width (128 in the paper).
        variant: ``"v2026"`` (official HEAD) or ``"v2025.03"`` (the released checkpoint); see fusion.py.
        depth_head: build the auxiliary depth decoder (needed for the SiLog loss in training).
        drop_path: stochastic depth of the encoder (0.1 in the official recipe).
        detach_patches: block gradients through the patch stream as the official code does (@torch.no_grad on
            split/merge); set False to train the patch branch end to end.
        patch_grid: patches per side of the full-resolution grid (8).
    """

    def __init__(self, backbone: str = "swin_base_patch4_window12_384", emb_dim: int = 128, variant: str = "v2026",
                 depth_head: bool = True, drop_path: float = 0.1, detach_patches: bool = True,
                 patch_grid: int = 8) -> None:
        super().__init__()
        if backbone not in SWIN_SPECS:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(SWIN_SPECS)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        spec = SWIN_SPECS[backbone]
        self.variant, self.patch_grid, self.detach_patches = variant, patch_grid, detach_patches
        self.use_depth, self.use_patches = True, True  # ablation switches (see set_ablation)
        self.grad_checkpointing = "none"
        self.backbone = SwinEncoder(spec, drop_path=drop_path)
        # Encoder stage i (C_i channels) -> emb_dim; then a global feature from all four stages.
        self.stage_mixers = nn.ModuleList(ConvNormAct(ch, emb_dim) for ch in spec.channels)
        self.global_mixer = ConvNormAct(4 * emb_dim, emb_dim)
        self.global_refine = nn.Sequential(ConvNormAct(emb_dim, emb_dim))
        self.decoder = SegmentationDecoder(emb_dim, variant, patch_grid, detach_patches)
        self.depth_decoder = DepthDecoder(emb_dim, variant) if depth_head else None
        self._init_non_backbone()

    def _init_non_backbone(self) -> None:
        # The official code initialises every conv outside the encoder with trunc_normal(0.02) and zero bias.
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("backbone."):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # Hub I/O lives beside checkpoint handling (engine/hub.py); these overrides of the mixin only defer to it, and
    # import it lazily because the engine imports the models, not the other way round.
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, *, device: str | torch.device = "cpu",
                        revision: str | None = None, **_: object) -> PDFNet:
        """A ``save_pretrained`` folder or a hub id -> model in eval mode (offline-safe; strict weight loading)."""
        from ..engine.hub import load_pretrained

        return load_pretrained(pretrained_model_name_or_path, device=device, revision=revision)[0]

    def generate_model_card(self, *args: object, **kwargs: object):
        """The card ``save_pretrained``/``push_to_hub`` write (see ``engine.hub.model_card``)."""
        from huggingface_hub import ModelCard

        from ..engine.hub import model_card

        return ModelCard(model_card(self._hub_mixin_config, n_parameters=count_parameters(self), **kwargs))

    def reset_derived_buffers(self) -> None:
        """Recompute buffers that are derived from the architecture, not learned (after loading onto 'meta')."""
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.relative_position_index = relative_position_index(module.window)

    @property
    def has_depth_head(self) -> bool:
        return self.depth_decoder is not None

    def set_fusion_dropout(self, p: float) -> None:
        """Dropout inside every CoA cross-attention block (official: 0.1; training only)."""
        for module in self.modules():
            if isinstance(module, CoA):
                module.set_dropout(p)

    def set_grad_checkpointing(self, mode: str | bool = "encoder") -> None:
        """Which activations backward recomputes instead of keeping: ``none``; ``encoder`` (every Swin block);
        ``all`` (also the level mixers, each FSE stage and the full-resolution decoder and depth-head stages).
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

    def _mix_levels(self, *stage_maps: torch.Tensor) -> Pyramid:
        levels = [mixer(f) for mixer, f in zip(self.stage_mixers, stage_maps)]
        top = levels[3]
        glob = self.global_refine(self.global_mixer(torch.cat([resize_like(f, top) for f in levels], dim=1)))
        return levels + [glob]

    def encode(self, x: torch.Tensor) -> Pyramid:
        """Shared encoder + channel mixers. x: [N,3,h,w] -> [L1 (h/4), L2 (h/8), L3 (h/16), L4 (h/32), global (h/32)],
        each with emb_dim channels."""
        return checkpointed(self.grad_checkpointing == "all", self._mix_levels, *self.backbone(x))

    def patch_pyramid_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Spatial sizes of the merged patch pyramid [L1..L4, global] for an h x w input."""
        th, tw = -(-(h // self.patch_grid) // 4), -(-(w // self.patch_grid) // 4)  # tokens per patch after embed
        sizes = []
        for _ in range(4):
            sizes.append((self.patch_grid * th, self.patch_grid * tw))
            th, tw = (th + 1) // 2, (tw + 1) // 2
        return sizes + [sizes[-1]]

    @staticmethod
    def _release_if_cpu_inference(image: torch.Tensor) -> None:
        if lean_inference(image):
            release_freed_memory()

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

    def forward(self, image: torch.Tensor, depth: torch.Tensor,
                return_depth: bool = False) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """image: [B,3,H,W] ImageNet-normalised; depth: [B,1,H,W] any range (min-max normalised per sample here).

        Returns logits ``[main [B,1,H,W], side1..side5]``; with ``return_depth=True`` also the depth head's 5 logit
        maps (``(seg_logits, depth_logits)``).
        """
        self.check_input(image, depth)
        b, _, h, w = image.shape
        depth3 = normalize_depth(depth).expand(-1, 3, -1, -1)
        if not self.use_depth:
            depth3 = torch.zeros_like(depth3)

        half = (h // 2, w // 2)
        both = self.encode(torch.cat([resize(image, half), resize(depth3, half)], dim=0))
        img_feats = [f[:b] for f in both]
        depth_feats = [f[b:] for f in both]
        del both
        self._release_if_cpu_inference(image)

        if self.use_patches:
            # The official merge runs under @torch.no_grad, so no gradient reaches the patch pass: with
            # detach_patches the pass runs without a graph (same values, no activations kept for backward).
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_patches):
                patch_feats = [merge_grid(f, self.patch_grid)
                               for f in self.encode(split_grid(image, self.patch_grid))]
        else:
            # Ablation "no patch branch": zeros of the shapes the patch pyramid would have.
            patch_feats = [img_feats[0].new_zeros(b, f.shape[1], *size)
                           for f, size in zip(img_feats, self.patch_pyramid_sizes(h, w))]

        self._release_if_cpu_inference(image)  # the encoder passes leave much freed heap behind
        if not return_depth:
            # Inference needs the pyramids only inside the decoder: let it free them level by level.
            return self.decoder(image, depth3, img_feats, depth_feats, patch_feats,
                                release_inputs=lean_inference(image))
        seg_logits = self.decoder(image, depth3, img_feats, depth_feats, patch_feats)
        if self.depth_decoder is None:
            raise RuntimeError("return_depth=True needs the depth head (model.depth_head: true)")
        return seg_logits, self.depth_decoder(image, depth3, img_feats, depth_feats, patch_feats)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
