"""PDFNet's fusion: CoA cross-attention, BIS boundary/integrity split, and the FSE block that ties them together.

The two official code versions differ here in BIS, the boundary-patch weight and where CoA applies dropout; the
differences are listed in one table, :mod:`pdfnet.variants`.

A fusion block is registered in :data:`pdfnet.registry.FUSIONS` (``model.fusion``): built as
``Block(in_dim, emb_dim, pool, variant, patch_grid, detach_patches)`` and called as
``block(img, depth, patch, prev_logits) -> (img, depth, patch)`` (see :class:`FSE`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import resize_like
from ..registry import FUSIONS
from ..variants import OfficialVersion, official_version
from .blocks import ConvNormAct, RMSNorm, SwiGLU


class CoA(nn.Module):
    """Cross-attention block: single-head attention of ``query`` over ``context``, RMSNorm, residual, SwiGLU FFN.

    query: [B, Nq, C]; context: [B, Nk, C] -> [B, Nq, C]. The projections keep ``nn.MultiheadAttention``'s parameter
    layout (``in_proj_weight`` [3C, C], ``out_proj``, no biases) but the attention runs through SDPA, so the
    [Nq, Nk] score matrix (1 GiB at 1024² input) is never materialised on kernels that support it.
    """

    def __init__(self, dim: int, dropout: float = 0.1, dropout_before_norm: bool = False) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention
        self.attn_dropout = dropout
        self.norm1 = RMSNorm(dim, channels_first=False)
        self.drop1 = nn.Dropout(dropout)
        self.ffn = SwiGLU(dim, dim)
        self.norm2 = RMSNorm(dim, channels_first=False)
        self.drop2 = nn.Dropout(dropout)
        self.dropout_before_norm = dropout_before_norm

    def set_dropout(self, p: float) -> None:
        """Dropout of the attention weights and of both residual branches (official: 0.1)."""
        self.attn_dropout = self.drop1.p = self.drop2.p = p

    def attend(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        q = F.linear(query, w_q).unsqueeze(1)  # one head: [B, 1, Nq, C]
        k = F.linear(context, w_k).unsqueeze(1)
        v = F.linear(context, w_v).unsqueeze(1)
        drop = self.attn_dropout if self.training else 0.0
        return self.out_proj(F.scaled_dot_product_attention(q, k, v, dropout_p=drop).squeeze(1))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.dropout_before_norm:  # v2025.03
            x = self.norm1(self.drop1(self.attend(query, context))) + query
            return self.norm2(self.drop2(self.ffn(x))) + x
        x = self.drop1(self.norm1(self.attend(query, context))) + query
        return self.drop2(self.norm2(self.ffn(x))) + x


def boundary_integrity_split(pred_logits: torch.Tensor, version: OfficialVersion) -> tuple[torch.Tensor, torch.Tensor]:
    """BIS: split a coarse prediction into a boundary map and an integrity (confident interior) map.

    pred_logits: [B,1,h,w] -> (boundary [B,1,h,w], integrity [B,1,h,w]).

    Official quirks kept for checkpoint parity:
    * sigmoid is applied twice: the boundary is computed on ``sigmoid(sigmoid(logits))``;
    * the local mean is a zero-padded average pool (``count_include_pad``), so the frame of the map always looks
      like a boundary;
    * the pool kernel is ``d + 1`` for even ``d = size // 8`` and ``d`` for odd ``d`` (always odd, keeping the size),
      and in ``v2026`` the parity of ``h // 8`` also decides between a thresholded (even) and continuous (odd)
      boundary. At ``d == 1`` the pool is the identity and the boundary is zero.
    """
    probs = pred_logits.sigmoid()
    twice = probs.sigmoid()
    kh, kw = (d + 1 if d % 2 == 0 else d for d in (pred_logits.shape[-2] // 8, pred_logits.shape[-1] // 8))
    local_mean = F.avg_pool2d(twice, kernel_size=(kh, kw), stride=1, padding=(kh // 2, kw // 2))
    boundary = version.boundary_scale * (twice - local_mean).abs()
    if version.boundary_threshold is not None and (pred_logits.shape[-2] // 8) % 2 == 0:
        boundary = (boundary > version.boundary_threshold).to(boundary.dtype)
    return boundary, F.relu(probs - version.integrity_boundary_weight * boundary)


def grid_cell_means(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean of each cell of a grid x grid partition. x: [B,C,H,W] (H, W multiples of grid) -> [B,C,grid,grid]."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"feature map {h}x{w} is not divisible into a {grid}x{grid} patch grid")
    return x.view(b, c, grid, h // grid, grid, w // grid).mean(dim=(3, 5))


def expand_grid(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-expand per-cell values [B,C,g,g] to [B,C,*size] (size multiple of g)."""
    g = values.shape[-1]
    return values.repeat_interleave(size[0] // g, dim=2).repeat_interleave(size[1] // g, dim=3)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> [B,H*W,C]."""
    return x.flatten(2).transpose(1, 2)


def untokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B,H*W,C] -> [B,C,H,W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


@FUSIONS.register("fse")
class FSE(nn.Module):
    """Fusion block (the paper's FSE): gates the three streams by the previous prediction, emphasises boundary
    patches (BIS) and lets image, depth and patch features attend to each other (CoA).

    img [B,Ci,hi,wi], depth [B,Cd,hd,wd], patch [B,Cp,hp,wp], prev_logits [B,1,h,w] (h, w multiples of the patch grid)
    -> (img [B,E,hi,wi], depth [B,E,hd,wd], patch [B,E,hp,wp]).
    """

    def __init__(self, in_dim: int, emb_dim: int, pool: int, variant: str, patch_grid: int = 8,
                 detach_patches: bool = True) -> None:
        super().__init__()
        self.version = official_version(variant)
        self.pool, self.patch_grid, self.detach_patches = pool, patch_grid, detach_patches
        # Official names I/P/D_channelswich, IP, PI, ID, DI: kept in the official key map (official.py).
        self.img_proj = ConvNormAct(in_dim, emb_dim)
        self.patch_proj = ConvNormAct(in_dim, emb_dim)
        self.depth_proj = ConvNormAct(in_dim, emb_dim)
        before = self.version.coa_dropout_before_norm
        self.img_from_patch = CoA(emb_dim, dropout_before_norm=before)
        self.patch_from_context = CoA(emb_dim, dropout_before_norm=before)
        self.img_from_depth = CoA(emb_dim, dropout_before_norm=before)
        self.depth_from_context = CoA(emb_dim, dropout_before_norm=before)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == 1:
            return x
        return F.adaptive_avg_pool2d(x, (x.shape[-2] // self.pool, x.shape[-1] // self.pool))

    def forward(self, img: torch.Tensor, depth: torch.Tensor, patch: torch.Tensor,
                prev_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boundary, integrity = boundary_integrity_split(prev_logits, self.version)
        probs = prev_logits.sigmoid()
        img = img * resize_like(probs, img)
        depth = depth * resize_like(probs, depth)
        patch = patch * resize_like(probs, patch)

        img_cs = self.img_proj(img)
        hi, wi = img_cs.shape[-2:]
        img_tokens, pooled_img = tokens(img_cs), tokens(self._pooled(img_cs))

        # Integrity prior on depth: trust depth inside confident regions. Note the official order here: logits are
        # resized before the sigmoid (above, the sigmoid is resized).
        depth_gate = resize_like(prev_logits, depth).sigmoid() + resize_like(integrity, depth)
        depth_cs = self.depth_proj(depth * depth_gate)
        pooled_depth_map = self._pooled(depth_cs)
        pooled_depth = tokens(pooled_depth_map)

        # Boundary-patch selection: patches of the grid that contain boundary get a larger weight.
        score = grid_cell_means(boundary, self.patch_grid)
        weight = 1 + (score > 0).to(score.dtype) if self.version.binary_patch_weight else 1 + 5 * score
        if self.detach_patches:
            # The official split/merge run under @torch.no_grad: no gradient reaches the patch stream here.
            patch, weight = patch.detach(), weight.detach()
        patch_cs = self.patch_proj(patch * expand_grid(weight, patch.shape[-2:]))
        pooled_patch_map = self._pooled(patch_cs)
        pooled_patch = tokens(pooled_patch_map)

        patch_feat = self.patch_from_context(pooled_patch, torch.cat([pooled_img, pooled_depth], dim=1))
        img_feat = self.img_from_patch(img_tokens, patch_feat)
        depth_feat = self.depth_from_context(pooled_depth, torch.cat([pooled_img, pooled_patch], dim=1))
        img_feat = self.img_from_depth(img_feat, depth_feat)

        patch_out = resize_like(untokens(patch_feat, *pooled_patch_map.shape[-2:]), patch) + patch_cs
        depth_out = resize_like(untokens(depth_feat, *pooled_depth_map.shape[-2:]), depth) + depth_cs
        img_out = untokens(img_feat, hi, wi) + img_cs
        return img_out, depth_out, patch_out
