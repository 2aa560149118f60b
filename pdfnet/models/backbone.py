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

It keeps the Swin state-dict key names, so Microsoft's and timm's pretrained Swin checkpoints load into it (see
:func:`load_pretrained_backbone`, which uses timm for hub ids). Its two small layers (the token MLP and stochastic
depth) are written here rather than imported from ``timm.layers``: that import pulls in torchvision and
``torch._dynamo`` — about 200 MB of resident memory and seconds of start-up in every inference process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import checkpointed, lean_inference


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


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B,H,W,C] (H, W multiples of window) -> [B, nW, window*window, C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // window) * (w // window), window * window, c)


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's pairwise relative-position index for a window, int64 [window**2, window**2], on the default device.

    Computed on the CPU and moved: the same arithmetic on 'meta' (a model built to receive a checkpoint) runs
    through torch's reference kernels, whose first use imports torch._dynamo (~150 MB resident per process)."""
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
    windows = _window_partition(labels, window).squeeze(-1)[0]  # [nW, N]
    return windows[:, None, :] == windows[:, :, None]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with Swin's relative position bias, via SDPA.

    Split in two so the block can run the linear layers on real tokens only (see :class:`SwinBlock`):
    :meth:`attend` takes the projected, padded ``qkv`` map and returns the mixed values before the output projection
    ``proj``. ``region_mask``: optional bool [nW, N, N] (True = may attend), windows in row-major order.
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

    def attend(self, qkv: torch.Tensor, region_mask: torch.Tensor | None,
               queries: torch.Tensor | None = None) -> torch.Tensor:
        """qkv: [B, Hp, Wp, 3C] (Hp, Wp multiples of the window) -> attention output [B, Hp, Wp, C] (before proj).

        ``queries`` (only for a map that is one window): int64 [M] positions in the window whose outputs are wanted;
        the result is then [B, M, C] in that order. Padding tokens still serve as keys and values, but their own
        queries, whose outputs the block would crop, are not computed (up to 9x fewer in a patch pass's last
        stages)."""
        b, hp, wp, c3 = qkv.shape
        c, ws, heads = c3 // 3, self.window, self.num_heads
        nh, nw, d = hp // ws, wp // ws, c // heads
        # One copy from the map to [3, B, windows*heads, N, d]: windows folded into the head dimension, so the
        # per-window mask broadcasts over the batch and SDPA can use its fused 4-D kernels.
        qkv = qkv.view(b, nh, ws, nw, ws, 3, heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = qkv.reshape(3, b, nh * nw * heads, ws * ws, d).unbind(0)
        bias = self.position_bias().to(q.dtype).unsqueeze(0)  # [1, heads, N, N]
        if region_mask is not None:
            bias = bias.masked_fill(~region_mask.unsqueeze(1), float("-inf"))  # [nW, heads, N, N]
        else:
            bias = bias.expand(nh * nw, -1, -1, -1)
        bias = bias.reshape(1, nh * nw * heads, ws * ws, ws * ws)
        if queries is not None:
            if nh * nw != 1:
                raise ValueError("attend(queries=...) needs a map that is a single window")
            out = F.scaled_dot_product_attention(q.index_select(2, queries), k, v,
                                                 attn_mask=bias.index_select(2, queries))
            return out.transpose(1, 2).reshape(b, len(queries), c)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.view(b, nh, nw, heads, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)


def _shift_segments(n: int, shift: int, n_padded: int) -> list[tuple[int, int, int]]:
    """Where rows [0, n) of a map land after zero-padding to ``n_padded`` and rolling by ``-shift``:
    a list of (src_start, src_stop, dst_start) runs (row r goes to (r - shift) mod n_padded)."""
    runs, start = [], 0
    while start < n:
        dst = (start - shift) % n_padded
        stop = min(n, start + n_padded - dst)  # until the destination wraps around
        runs.append((start, stop, dst))
        start = stop
    return runs


def _window_positions(h: int, w: int, shift: int, window: int, device: torch.device) -> torch.Tensor:
    """Where each token of an h x w map (row-major) sits in its single padded window after the roll by ``-shift``:
    int64 [h*w] flat positions in the window."""
    rows = (torch.arange(h, device=device) - shift) % window
    cols = (torch.arange(w, device=device) - shift) % window
    return (rows[:, None] * window + cols[None, :]).flatten()


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block. x: [B, H*W, C] -> same.

    The official block zero-pads the normed map to a multiple of the window, rolls it by half a window (odd blocks),
    and projects every token. A zero token's q/k/v is just the qkv bias and the output projection acts per token, so
    here only real tokens are projected, written straight to their rolled place in a bias-filled buffer, and ``proj``
    runs after un-rolling and cropping: the same numbers without linear-layer work on padding (up to 9x the real
    tokens in the last stage of a 1024² patch pass) and without separate pad/roll/crop copies.
    """

    MLP_TOKENS_PER_SLICE = 8192  # CPU inference (see forward)

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
        ws = self.window
        qkv = self.attn.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        rows, cols = _shift_segments(h, self.shift, hp), _shift_segments(w, self.shift, wp)
        if (hp, wp) != (h, w) or self.shift:
            placed = self.attn.qkv.bias.to(qkv.dtype).expand(b, hp, wp, 3 * c).clone()
            for r0, r1, rd in rows:
                for c0, c1, cd in cols:
                    placed[:, rd:rd + r1 - r0, cd:cd + c1 - c0] = qkv[:, r0:r1, c0:c1]
            qkv = placed
        if (hp, wp) == (ws, ws) and (h, w) != (ws, ws):
            # The whole map is one padded window: attend for the real tokens only, already in their order.
            y = self.attn.attend(qkv, region_mask if self.shift else None, _window_positions(h, w, self.shift, ws,
                                                                                       qkv.device))
        elif (hp, wp) != (h, w) or self.shift:
            y = self.attn.attend(qkv, region_mask if self.shift else None)
            out = y.new_empty(b, h, w, c)
            for r0, r1, rd in rows:
                for c0, c1, cd in cols:
                    out[:, r0:r1, c0:c1] = y[:, rd:rd + r1 - r0, cd:cd + c1 - c0]
            y = out
        else:
            y = self.attn.attend(qkv, None)
        y = self.attn.proj(y.reshape(b, h * w, c))
        x = x + self.drop_path(y)
        if lean_inference(x) and not self.training:
            # The MLP acts per token: run it on slices of tokens, added in place, so that its 4x-wide hidden
            # activations (256 MB in the first stage of a 1024² patch pass) exist a slice at a time.
            for tokens in x.view(-1, c).split(self.MLP_TOKENS_PER_SLICE):
                tokens.add_(self.mlp(self.norm2(tokens)))
            return x
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

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enabled

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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return obj


def swin_state_dict_from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm puts patch merging at the start of stage i+1 (``layers.{i+1}.downsample``); Swin at the end of stage i."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        out[".".join(parts)] = value
    return out


def load_pretrained_backbone(encoder: SwinEncoder, source: str) -> list[str]:
    """Load ImageNet-pretrained Swin weights into ``encoder``; returns the encoder keys left at their init.

    ``source``: a local file (Microsoft ``swin_base_patch4_window12_384_22k.pth`` as the official README uses, a timm
    ``.pth``/``.safetensors``), or a timm/Hugging Face hub id (``timm/swin_base_patch4_window12_384.ms_in22k``),
    which needs network access or a filled local cache. Like the official code, only keys whose name and shape match
    are loaded (classification heads, final norm and the ape table, absent from the classification checkpoints, stay
    at their init). Raises FileNotFoundError/RuntimeError with the source named when nothing usable is found.
    """
    path = Path(os.path.expanduser(source))
    if path.exists():
        sd = _read_state_dict(path)
    elif source.endswith((".pth", ".pt", ".bin", ".safetensors")) or os.sep in source and not source.startswith(
            ("timm/", "hf-hub:")):
        raise FileNotFoundError(f"pretrained backbone file not found: {source!r} (set model.pretrained to an existing "
                                "file, a hub id such as 'timm/swin_base_patch4_window12_384.ms_in22k', or '' for none)")
    else:
        import timm

        name = source.removeprefix("hf-hub:").removeprefix("timm/")
        try:
            sd = timm.create_model(name, pretrained=True).state_dict()
        except Exception as err:  # network or cache errors come in many types; name the source and the way out
            raise RuntimeError(f"could not load pretrained backbone {source!r} from the hub ({err}). Offline? Download "
                               "the file once and set model.pretrained to its local path.") from err
    if any(k.startswith("layers.3.downsample") for k in sd):
        sd = swin_state_dict_from_timm(sd)
    own = encoder.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not usable:
        raise RuntimeError(f"{source!r} holds no Swin weights matching this encoder "
                           f"(embed_dim {encoder.spec.embed_dim}, depths {encoder.spec.depths})")
    left = sorted(set(own) - set(usable))
    _check_left_at_init(source, left, own, sd)
    encoder.load_state_dict(usable, strict=False)
    return left


# Encoder tensors that ImageNet classification checkpoints do not have: the detection-style absolute position
# embedding and the per-stage output norms. They start from their init in the official code too.
EXPECTED_AT_INIT = ("absolute_pos_embed", "norm*.weight", "norm*.bias")


def key_family(key: str) -> str:
    """``layers.2.blocks.7.attn.qkv.weight`` -> ``layers.*.blocks.*.attn.qkv.weight``."""
    return ".".join("*" if part.isdigit() else re.sub(r"\d+$", "*", part) for part in key.split("."))


def _check_left_at_init(source: str, left: list[str], own: dict[str, torch.Tensor],
                        loaded: dict[str, torch.Tensor]) -> None:
    """Fail when a whole family of encoder tensors (e.g. every relative-position table) would stay random; warn,
    naming them, when only some tensors would."""
    unexpected = [k for k in left if key_family(k) not in EXPECTED_AT_INIT]
    if not unexpected:
        return
    families: dict[str, list[str]] = {}
    for key in own:
        families.setdefault(key_family(key), []).append(key)
    whole = [f for f in dict.fromkeys(key_family(k) for k in unexpected) if set(families[f]) <= set(unexpected)]
    if whole:
        reasons = []
        for family in whole:
            example = families[family][0]
            if example in loaded:
                reasons.append(f"{family} ({len(families[family])} tensors): shape {list(loaded[example].shape)} "
                               f"in the file, {list(own[example].shape)} in this encoder")
            else:
                reasons.append(f"{family} ({len(families[family])} tensors): not in the file")
        raise RuntimeError(
            f"pretrained backbone {source!r} does not fit this Swin (window {own_window(own)}): these tensors would "
            "all stay at random init:\n  " + "\n  ".join(reasons) + "\nUse weights of the same architecture "
            "(the paper: swin_base_patch4_window12_384 22k), or set model.pretrained='' to train from scratch.")
    warnings.warn(f"pretrained backbone {source!r}: {len(unexpected)} encoder tensor(s) not in the file or of another "
                  f"shape, left at random init: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""),
                  stacklevel=3)


def own_window(own: dict[str, torch.Tensor]) -> int:
    """The attention window of an encoder state dict (from its relative-position table size)."""
    table = next(v for k, v in own.items() if k.endswith("relative_position_bias_table"))
    return (int(round(table.shape[0] ** 0.5)) + 1) // 2
