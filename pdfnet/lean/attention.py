"""CPU form of CoA's attention in training: attention dropout a chunk of queries at a time.

CPU's fused (flash) SDPA kernel has no dropout, so SDPA with dropout falls back to the math path, which keeps the
whole [Nq,Nk] probability matrix, its dropout mask and the dropped copy for backward: at the finest FSE level of a
1024² input (16384 x 8192 tokens) that is ~5 GB per step. CUDA's flash kernel supports dropout and needs none of this.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint

from ..models.fusion import CoA


def attention_with_dropout_in_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float,
                                     chunk: int = 1024) -> torch.Tensor:
    """SDPA with attention dropout, ``chunk`` queries at a time, each chunk recomputed in backward.
    q: [B,H,Nq,d], k/v: [B,H,Nk,d] -> [B,H,Nq,d]. The recomputation replays the dropout masks, so values and
    gradients are those of one SDPA call with the same masks; memory is bounded by [chunk, Nk]."""
    attend = functools.partial(F.scaled_dot_product_attention, dropout_p=dropout)
    return torch.cat([torch_checkpoint.checkpoint(attend, q[:, :, i:i + chunk], k, v, use_reentrant=False)
                      for i in range(0, q.shape[2], chunk)], dim=2)


class LeanCoA(CoA):
    """:class:`~pdfnet.models.fusion.CoA` with attention dropout in query chunks while training (module docstring)."""

    def attend(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        drop = self.attn_dropout if self.training else 0.0
        if drop == 0 or not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return super().attend(query, context)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        q = F.linear(query, w_q).unsqueeze(1)
        k = F.linear(context, w_k).unsqueeze(1)
        v = F.linear(context, w_v).unsqueeze(1)
        return self.out_proj(attention_with_dropout_in_chunks(q, k, v, drop).squeeze(1))
