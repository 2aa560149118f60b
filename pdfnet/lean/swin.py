"""CPU form of the Swin block: linear layers on real tokens only, attention for real queries only in maps smaller than
one window, and the MLP in slices of tokens at inference.

The reference block (pdfnet/models/backbone.py) zero-pads the normed map to a multiple of the window, rolls it and
projects every token, padding included. A zero token's q/k/v is just the qkv bias and the output projection acts per
token, so here only real tokens are projected, written straight to their rolled place in a bias-filled buffer, and
``proj`` runs after un-rolling and cropping: the same numbers without linear-layer work on padding (up to 9x the real
tokens in the last stage of a 1024² patch pass) and without separate pad/roll/crop copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.backbone import SwinBlock, WindowAttention


def shift_segments(n: int, shift: int, n_padded: int) -> list[tuple[int, int, int]]:
    """Where rows [0, n) of a map land after zero-padding to ``n_padded`` and rolling by ``-shift``:
    a list of (src_start, src_stop, dst_start) runs (row r goes to (r - shift) mod n_padded)."""
    runs, start = [], 0
    while start < n:
        dst = (start - shift) % n_padded
        stop = min(n, start + n_padded - dst)  # until the destination wraps around
        runs.append((start, stop, dst))
        start = stop
    return runs


def window_positions(h: int, w: int, shift: int, window: int, device: torch.device) -> torch.Tensor:
    """Where each token of an h x w map (row-major) sits in its single padded window after the roll by ``-shift``:
    int64 [h*w] flat positions in the window."""
    rows = (torch.arange(h, device=device) - shift) % window
    cols = (torch.arange(w, device=device) - shift) % window
    return (rows[:, None] * window + cols[None, :]).flatten()


class LeanWindowAttention(WindowAttention):
    """:class:`~pdfnet.models.backbone.WindowAttention` on a projected, padded qkv map (see :meth:`attend`)."""

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
        # One copy from the map to [3, B, windows*heads, N, d]: windows folded into the head dimension.
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


class LeanSwinBlock(SwinBlock):
    """:class:`~pdfnet.models.backbone.SwinBlock` without linear-layer work on padding (module docstring); at
    inference its MLP runs on slices of tokens, added in place, so that the 4x-wide hidden activations (256 MB in the
    first stage of a 1024² patch pass) exist a slice at a time."""

    MLP_TOKENS_PER_SLICE = 8192

    def forward(self, x: torch.Tensor, hw: tuple[int, int], region_mask: torch.Tensor | None) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        ws = self.window
        qkv = self.attn.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        rows, cols = shift_segments(h, self.shift, hp), shift_segments(w, self.shift, wp)
        if (hp, wp) != (h, w) or self.shift:
            placed = self.attn.qkv.bias.to(qkv.dtype).expand(b, hp, wp, 3 * c).clone()
            for r0, r1, rd in rows:
                for c0, c1, cd in cols:
                    placed[:, rd:rd + r1 - r0, cd:cd + c1 - c0] = qkv[:, r0:r1, c0:c1]
            qkv = placed
        if (hp, wp) == (ws, ws) and (h, w) != (ws, ws):
            # The whole map is one padded window: attend for the real tokens only, already in their order.
            y = self.attn.attend(qkv, region_mask if self.shift else None,
                                 window_positions(h, w, self.shift, ws, qkv.device))
        elif (hp, wp) != (h, w) or self.shift:
            y = self.attn.attend(qkv, region_mask if self.shift else None)
            out = y.new_empty(b, h, w, c)
            for r0, r1, rd in rows:
                for c0, c1, cd in cols:
                    out[:, r0:r1, c0:c1] = y[:, rd:rd + r1 - r0, cd:cd + c1 - c0]
            y = out
        else:
            y = self.attn.attend(qkv, None)
        x = x + self.drop_path(self.attn.proj(y.reshape(b, h * w, c)))
        if not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            for tokens in x.view(-1, c).split(self.MLP_TOKENS_PER_SLICE):
                tokens.add_(self.mlp(self.norm2(tokens)))
            return x
        return x + self.drop_path(self.mlp(self.norm2(x)))
