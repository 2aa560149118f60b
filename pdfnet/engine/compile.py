"""torch.compile for training: the model (whole, or its repeated blocks) before it is wrapped in DDP, and the loss.

``train.compile``:

* ``model``: the whole model as one graph. One GPU: the fewest kernel launches. Under DDP the backward is one
  compiled node, so gradient all-reduces cannot start before it ends.
* ``blocks``: each encoder block, each fusion block and the two decoders compiled in place (regional compile, as
  torchtitan does): repeated blocks of equal shape share their compiled code (Swin-B's 18 third-stage blocks compile
  twice: shifted and not), compile time drops, and DDP overlaps the all-reduce of finished blocks with the rest of
  the backward.

A block's code is shared by every instance, and dynamo compiles one variant per shape, shift, pass (half-resolution
image+depth, full-resolution patches) and batch shape (training, validation). Its default limit (8 variants per code
object) would make the later variants run eager without a word; :func:`compile_for_training` raises the limit to
the number of variants this model needs, counted from its blocks. Shapes are static (``dynamic=False``): training
runs at one size, so each variant is compiled for its own shapes, with no symbolic-shape reasoning (which made
dynamo's recompiles of a Swin block take 6-19 s instead of ~1.6 s on a 2-core CPU, measured 2026-12-07) and with
kernels specialised to them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.backbone import SwinBlock
from ..models.decoder import DepthDecoder, SegmentationDecoder

COMPILE_SCOPES = ("none", "model", "blocks")
# Variants of a block per configuration: encoder passes (half-resolution, patches) x batch shapes (training, a full
# validation batch, the last smaller one: shapes are static).
PASSES, BATCH_SHAPES = 2, 3


def regional_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules ``blocks`` compiles: every Swin block (or a timm backbone's blocks, which are compiled with the
    backbone as one region), every fusion block and both decoders' other parts are compiled with the decoder."""
    blocks = [m for m in model.modules() if isinstance(m, SwinBlock)]
    if not blocks and hasattr(model, "backbone"):
        blocks.append(model.backbone)
    blocks += [m for m in model.modules() if isinstance(m, (SegmentationDecoder, DepthDecoder))]
    return blocks


def variants_needed(model: nn.Module) -> int:
    """How many compiled variants the most shared block code needs: distinct Swin block configurations (width,
    shift) x encoder passes x batch shapes; at least dynamo's default."""
    configs = {(m.norm1.normalized_shape, m.shift) for m in model.modules() if isinstance(m, SwinBlock)}
    return max(8, len(configs) * PASSES * BATCH_SHAPES)


def compile_for_training(model: nn.Module, scope: str, backend: str = "inductor") -> nn.Module:
    """The module the training step calls: ``model`` itself (``none``), ``torch.compile(model)`` (``model``), or
    ``model`` with its blocks compiled in place (``blocks``). Wrap the result in DDP, not the other way round."""
    if scope == "none":
        return model
    if scope == "model":
        return torch.compile(model, backend=backend, dynamic=False)
    if scope != "blocks":
        raise ValueError(f"train.compile must be one of {COMPILE_SCOPES}, got {scope!r}")
    limit = variants_needed(model)
    if torch._dynamo.config.recompile_limit < limit:
        torch._dynamo.config.recompile_limit = limit
    for block in regional_blocks(model):
        block.compile(backend=backend, dynamic=False)
    return model
