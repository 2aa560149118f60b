"""Swin Transformer encoder, detection style, as the official PDFNet uses it.

timm's ``SwinTransformer`` is not used as a whole because it does not reproduce the official computation:
it shrinks the window (and drops the shift) on feature maps smaller than the window, has no per-stage output norms,
no bicubically-resized absolute position embedding, and puts patch merging at the start of a stage. The official
encoder (the Swin *detection* backbone) instead:

* zero-pads every feature map to a multiple of the window, **after** ``norm1`` (padded tokens are zero vectors);
* leaves padded tokens unmasked in non-shifted blocks and uses the ``-100`` region mask in shifted blocks
  (here expressed as ``-inf``: both give the masked pairs a softmax weight below 1e-38, i.e. exactly zero in
  float32 after summation, and ``-inf`` avoids the denormal arithmetic that doubles the official CPU time);
* adds an absolute position embedding (``ape=True``, stored at 56x56) resized bicubically to the token grid;
* applies a LayerNorm to each stage output ``norm0..norm3``.

It keeps the Swin state-dict key names, so Microsoft's and timm's pretrained Swin checkpoints load into it
(pretrained.py). Its two small layers (the token MLP and stochastic depth) are written here rather than imported from
``timm.layers``: that import pulls in torchvision and ``torch._dynamo`` (~200 MB resident in every inference process).

A backbone (this one, or any timm model: timm_backbone.py) is registered in :data:`pdfnet.registry.BACKBONES` and
offers ``forward(image) -> 4 maps [B, C_i, H_i, W_i]`` (strides 4, 8, 16, 32), ``channels``, ``feature_sizes(h, w)``,
``set_grad_checkpointing(bool)`` and ``load_pretrained(source)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import checkpointed
from ..registry import BACKBONES


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` in place from N(0, std²) truncated to [-bound, bound] (absolute), by the inverse CDF of a
    uniform draw: the initialiser of the official code (timm's), whose random stream it reproduces. torch's own
    ``nn.init.trunc_normal_`` now rejection-samples, which gives other numbers for the same seed."""
    if tensor.is_meta:  # nothing to fill; meta erfinv_ would import torch._dynamo (~150 MB resident)
        return tensor
    lo, hi = (0.5 * (1.0 + math.erf(x / (std * math.sqrt(2.0)))) for x in (-bound, bound))
    tensor.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(std * math.sqrt(2.0))
    return tensor.clamp_(min=-bound, max=bound)


class Mlp(nn.Module):
    """Per-token MLP of a Swin block: fc1 -> GELU -> fc2 ([..., C] -> [..., C]; timm's ``Mlp`` key names)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a whole sample with probability ``p`` and scale the
    kept samples by 1 / (1 - p). x: [B, ...]. Draws one Bernoulli per sample, as timm does (same random stream)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * (mask.div_(keep) if keep > 0 else mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclasses.dataclass(frozen=True)
class SwinSpec:
    """Architecture of a Swin encoder. ``channels`` of stage i = embed_dim * 2**i."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    ape_grid: int = 56  # absolute position embedding grid: 224 / patch 4, the official default
    timm_name: str | None = None  # timm model whose pretrained weights fit this spec

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


SWIN_SPECS: dict[str, SwinSpec] = {
    # The paper's backbone (Swin-B, patch 4, window 12; 22k-pretrained at 384).
    "swin_base_patch4_window12_384": SwinSpec(128, (2, 2, 18, 2), (4, 8, 16, 32), 12,
                                              timm_name="swin_base_patch4_window12_384.ms_in22k"),
    # Same code path, a few M parameters: for tests, CPU smoke runs and the quickstart.
    "swin_tiny_test": SwinSpec(32, (1, 1, 2, 1), (1, 2, 4, 8), 12),
}


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B,H,W,C] (H, W multiples of window) -> [B, nW, window*window, C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B, nW, window*window, C] -> [B,H,W,C]."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's pairwise relative-position index for a window, int64 [window**2, window**2], on the default device.

    Computed on the CPU and moved: the same arithmetic on 'meta' runs through torch's reference kernels, whose first
    use imports torch._dynamo (~150 MB resident per process)."""
    arange = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(arange, arange, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return ((rel[..., 0] + window - 1) * (2 * window - 1) + (rel[..., 1] + window - 1)).to(torch.get_default_device())


def shifted_window_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Boolean mask [nW, N, N], True where two tokens of a shifted window may attend to each other.

    Regions are labelled on the padded grid exactly as the official code does (slices (0,-window), (-window,-shift),
    (-shift,None) in each dimension), so padded rows/columns belong to the last region.
    """
    labels = torch.zeros(1, hp, wp, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for ws in cuts:
            labels[:, hs, ws, :] = region
            region += 1
    windows = window_partition(labels, window).squeeze(-1)[0]  # [nW, N]
    return windows[:, None, :] == windows[:, :, None]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with Swin's relative position bias, via SDPA.

    windows [B, nW, N, C] -> [B, nW, N, C]; ``region_mask``: optional bool [nW, N, N] (True = may attend).
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Derived from the window size, so not saved; the official checkpoints carry it and the loader checks it.
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """[heads, N, N] additive bias."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, region_mask: torch.Tensor | None) -> torch.Tensor:
        b, nw, n, c = windows.shape
        heads = self.num_heads
        d = c // heads
        # Windows are folded into the head dimension ([B, nW*heads, N, d]) so that one [nW*heads, N, N] bias
        # broadcasts over the batch and SDPA runs its fused 4-D kernels.
        qkv = self.qkv(windows).view(b, nw, n, 3, heads, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.reshape(3, b, nw * heads, n, d).unbind(0)
        bias = self.position_bias().to(q.dtype).unsqueeze(0)  # [1, heads, N, N]
        if region_mask is not None:
            bias = bias.masked_fill(~region_mask.unsqueeze(1), float("-inf"))  # [nW, heads, N, N]
        else:
            bias = bias.expand(nw, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.reshape(1, nw * heads, n, n))
        return self.proj(out.view(b, nw, heads, n, d).transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block. x: [B, H*W, C] -> same.

    norm1, zero-pad to a multiple of the window, roll by half a window (odd blocks), attend within windows, undo the
    roll and the padding, residual; then norm2, MLP, residual.
    """

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], region_mask: torch.Tensor | None) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        ws, shift = self.window, self.shift
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        y = F.pad(self.norm1(x).view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), region_mask if shift else None), ws, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w].reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 token merge: [B, H*W, C] -> [B, ceil(H/2)*ceil(W/2), 2C] (odd sizes zero-padded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        # Channel order (row0,col0), (row1,col0), (row0,col1), (row1,col1): the Swin convention the weights expect.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.flatten(1, 2)))


class SwinStage(nn.Module):
    """Blocks of one resolution, then (except the last stage) patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, drop_paths: list[float],
                 downsample: bool) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, drop_paths[i]) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (stage output [B, H*W, C], merged tokens for the next stage or None)."""
        ws = self.window
        hp, wp = -(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws
        mask = shifted_window_mask(hp, wp, ws, self.shift, x.device) if len(self.blocks) > 1 else None
        for block in self.blocks:
            x = checkpointed(self.grad_checkpointing, block, x, hw, mask)
        return x, (self.downsample(x, hw) if self.downsample is not None else None)


class PatchEmbed(nn.Module):
    """4x4 patch embedding with LayerNorm; input zero-padded to a multiple of 4. [B,3,H,W] -> [B,C,H/4,W/4]."""

    def __init__(self, embed_dim: int, patch: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SwinEncoder(nn.Module):
    """Detection-style Swin: image [B,3,H,W] -> 4 stage maps [B, C_i, H/4/2**i, W/4/2**i] (ceil at odd sizes)."""

    def __init__(self, spec: SwinSpec, drop_path: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(spec.embed_dim)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, spec.embed_dim, spec.ape_grid, spec.ape_grid))
        trunc_normal_(self.absolute_pos_embed, std=0.02)
        n_blocks = sum(spec.depths)
        rates = [drop_path * i / max(1, n_blocks - 1) for i in range(n_blocks)]  # linear rule, as Swin
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(spec.depths, spec.num_heads)):
            start = sum(spec.depths[:i])
            self.layers.append(SwinStage(spec.channels[i], depth, heads, spec.window_size,
                                         rates[start:start + depth], downsample=i < len(spec.depths) - 1))
        for i, ch in enumerate(spec.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(ch))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def channels(self) -> tuple[int, ...]:
        return self.spec.channels

    @staticmethod
    def feature_sizes(h: int, w: int) -> list[tuple[int, int]]:
        """Spatial sizes of the 4 stage maps for an h x w input."""
        h, w = -(-h // 4), -(-w // 4)
        sizes = []
        for _ in range(4):
            sizes.append((h, w))
            h, w = (h + 1) // 2, (w + 1) // 2
        return sizes

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enabled

    def load_pretrained(self, source: str) -> list[str]:
        """ImageNet Swin weights (a file or a hub id, see pretrained.py); returns the keys left at their init."""
        from .pretrained import load_pretrained_swin

        return load_pretrained_swin(self, source)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        # Position embedding resized to the token grid on every call, as the official code (bicubic, no corners).
        x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, stage in enumerate(self.layers):
            stage_out, x = stage(x, (h, w))
            normed = getattr(self, f"norm{i}")(stage_out)
            outs.append(normed.view(-1, h, w, normed.shape[-1]).permute(0, 3, 1, 2).contiguous())
            h, w = (h + 1) // 2, (w + 1) // 2
        return outs


for _name, _spec in SWIN_SPECS.items():
    BACKBONES.register(_name, functools.partial(SwinEncoder, _spec))
