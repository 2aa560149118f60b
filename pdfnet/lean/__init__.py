"""Optional CPU speed and memory forms of PDFNet's modules: drop-in replacements with the same state-dict keys.

``model.impl: lean`` (what ``auto`` picks on a CPU) builds the reference model (pdfnet/models/) and then gives each
module listed in :data:`REPLACEMENTS` its lean class here: a subclass that adds no parameters and computes the same
arithmetic in a form that runs faster or in less memory on a CPU. Checkpoints, hub folders and the official
conversion are untouched: the weights are the same tensors under the same names. What each form does:

    norms.py       row-chunked training norms (cache-sized float32 temporaries), in-place inference norms
    swin.py        linear layers on real tokens only, single-window real queries, MLP in token slices
    attention.py   CoA attention dropout a chunk of queries at a time (CPU's fused kernel has no dropout)
    decoder.py     strip-wise upsample+conv with its own backward, recomputing logit heads, per-ISA conv layout,
                   the full-resolution inference path over bands of rows, heap trimming between stages
    losses.py      the SSIM blur as shifted sums with a symmetric backward

Every replacement is registered with the cases that check it against its reference (forward and backward, float32
and bf16, shapes across its chunk/band/strip borders, both conv-layout decisions): tests/test_lean.py runs them all,
so a fast path cannot land without its equality test. Under torch.compile the lean forms run their reference forms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ..losses.terms import SSIMLoss
from ..models.backbone import SwinBlock, WindowAttention, shifted_window_mask
from ..models.blocks import ConvNormAct, RMSNorm
from ..models.decoder import DepthDecoder, SegmentationDecoder
from ..models.fusion import CoA
from ..models.pdfnet import PDFNet
from ..registry import IMPLEMENTATIONS
from .attention import LeanCoA
from .cpu import ConvLayout
from .decoder import LeanDepthDecoder, LeanPDFNet, LeanSegmentationDecoder
from .losses import LeanSSIMLoss
from .norms import LeanConvNormAct, LeanRMSNorm
from .swin import LeanSwinBlock, LeanWindowAttention


@dataclasses.dataclass(frozen=True)
class Case:
    """One equality check: ``make()`` builds the reference module (random init); ``inputs(dtype)`` its arguments;
    ``call(module, inputs)`` runs it (default: ``module(*inputs)``). ``train``: also compare in training mode
    (gradients of parameters and floating inputs). ``dtypes`` and ``layouts`` (the conv-layout decisions: False =
    plain layout in training, as on CPUs without AVX-512; True = channels-last) it is checked in."""

    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[torch.dtype], tuple]
    call: Callable[[nn.Module, tuple], object] = lambda module, args: module(*args)
    train: bool = True
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    layouts: tuple[bool, ...] = (False, True)


@dataclasses.dataclass(frozen=True)
class Replacement:
    reference: type
    lean: type
    cases: Callable[[], list[Case]]


REPLACEMENTS: dict[type, Replacement] = {}


def register(reference: type, lean: type, cases: Callable[[], list[Case]]) -> None:
    """Make ``lean`` the CPU form of ``reference``. ``cases`` are mandatory: the equality checks of this form."""
    if not issubclass(lean, reference):
        raise TypeError(f"{lean.__name__} must subclass {reference.__name__} (same parameters, same keys)")
    REPLACEMENTS[reference] = Replacement(reference, lean, cases)


def make_lean(module: nn.Module, channels_last_in_training: bool | None = None) -> nn.Module:
    """Give every module of ``module`` whose exact class has a replacement its lean class, in place; returns
    ``module``. (Subclasses of the reference classes, e.g. your own ablations, keep their own code.)
    ``channels_last_in_training``: the conv layout decision of :class:`~pdfnet.lean.cpu.ConvLayout` (None: decided
    for this CPU)."""
    layout = ConvLayout(channels_last_in_training)
    for m in module.modules():
        replacement = REPLACEMENTS.get(type(m))
        if replacement is not None:
            m.__class__ = replacement.lean
            if "layout" in getattr(replacement.lean, "__annotations__", {}):
                m.layout = layout
    return module


def is_lean(module: nn.Module) -> bool:
    return any(isinstance(m, tuple(r.lean for r in REPLACEMENTS.values())) for m in module.modules())


IMPLEMENTATIONS.register("lean", make_lean)


# ------------------------------------------------------------------------------------------- equality cases
def _randn(*shape: int, dtype: torch.dtype, seed: int = 0, channels_last: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _seeded(make: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        module = make()
        with torch.no_grad():  # non-trivial norm weights and biases
            for p in module.parameters():
                if p.ndim == 1:
                    p.uniform_(0.5, 1.5)
        return module

    return build


def _norm_cases() -> list[Case]:
    # > 262144 elements (CHUNK_ELEMENTS): 3 row chunks of [1,16,200,180]; 5 token chunks of [2,40000,16].
    return [
        Case("channels_first", _seeded(lambda: RMSNorm(16)), lambda dt: (_randn(1, 16, 200, 180, dtype=dt),)),
        Case("channels_last_memory", _seeded(lambda: RMSNorm(16)),
             lambda dt: (_randn(1, 16, 200, 180, dtype=dt, channels_last=True),)),
        Case("tokens", _seeded(lambda: RMSNorm(16, channels_first=False)),
             lambda dt: (_randn(2, 40000, 16, dtype=dt),)),
    ]


def _conv_norm_act_cases() -> list[Case]:
    return [Case("two_chunks", _seeded(lambda: ConvNormAct(8, 16)), lambda dt: (_randn(1, 8, 130, 140, dtype=dt),)),
            Case("channels_last_input", _seeded(lambda: ConvNormAct(8, 16)),
                 lambda dt: (_randn(1, 8, 130, 140, dtype=dt, channels_last=True),))]


def _swin_block_cases() -> list[Case]:
    cases = []
    # (h, w, shift): padded maps, maps smaller than one window (real queries only), exact multiples, and a map of
    # 9000 tokens (two MLP slices of 8192 at inference).
    for h, w, shift in ((5, 4, 0), (5, 4, 3), (2, 3, 3), (12, 12, 3), (13, 18, 3), (100, 90, 0)):
        def call(block: nn.Module, args: tuple, h=h, w=w, shift=shift) -> torch.Tensor:
            mask = shifted_window_mask(-(-h // 6) * 6, -(-w // 6) * 6, 6, 3, args[0].device) if shift else None
            return block(args[0], (h, w), mask)

        cases.append(Case(f"{h}x{w}_shift{shift}",
                          _seeded(lambda shift=shift: SwinBlock(dim=16, num_heads=2, window=6, shift=shift,
                                                                drop_path=0.0)),
                          lambda dt, h=h, w=w: (_randn(2, h * w, 16, dtype=dt),), call))
    return cases


def _window_attention_cases() -> list[Case]:
    return [Case("windows", _seeded(lambda: WindowAttention(16, 6, 2)), lambda dt: (_randn(2, 4, 36, 16, dtype=dt),
                                                                                   None))]


def _coa_cases() -> list[Case]:
    # Dropout 0 here (random masks cannot match across forms); tests/test_lean.py checks the chunked dropout
    # against one SDPA call with the same masks.
    def make() -> nn.Module:
        coa = CoA(16)
        coa.set_dropout(0.0)
        return coa

    return [Case("cross", _seeded(make),
                 lambda dt: (_randn(2, 300, 16, dtype=dt), _randn(2, 200, 16, dtype=dt, seed=1)))]


def _decoder_cases() -> list[Case]:
    # 192x320: 3 strips of 64 output rows, bands of 64 rows and heads of 128 rows with a ragged last one.
    def inputs(dt: torch.dtype) -> tuple:
        return (_randn(1, 3, 192, 320, dtype=dt), _randn(1, 3, 192, 320, dtype=dt, seed=1),
                _randn(1, 16, 48, 80, dtype=dt, seed=2))

    return [Case("full_resolution_192x320", _seeded(lambda: SegmentationDecoder(16, "v2026")), inputs,
                 lambda m, args: m.full_resolution(*args))]


def _depth_decoder_cases() -> list[Case]:
    def inputs(dt: torch.dtype) -> tuple:
        return (_randn(1, 3, 128, 192, dtype=dt), _randn(1, 3, 128, 192, dtype=dt, seed=1),
                _randn(1, 16, 32, 48, dtype=dt, seed=2))

    return [Case(f"full_resolution_{v}", _seeded(lambda v=v: DepthDecoder(16, v)), inputs,
                 lambda m, args: m.full_resolution(*args)) for v in ("v2026", "v2025.03")]


def _model_cases() -> list[Case]:
    def inputs(dt: torch.dtype, h: int = 256, w: int = 256) -> tuple:
        return _randn(1, 3, h, w, dtype=dt), _randn(1, 1, h, w, dtype=dt, seed=1).abs()

    def make() -> nn.Module:
        model = PDFNet(backbone="swin_tiny_test", emb_dim=16, drop_path=0.0, fusion_dropout=0.0)
        return model

    # The conv layouts are checked module by module (the decoder cases); the whole model once per dtype: float32 at
    # 256² and 192x320, bf16 (emulated on most CPUs, ~4x slower) at 128².
    return [Case("tiny_256", _seeded(make), inputs, dtypes=(torch.float32,), layouts=(False,)),
            Case("tiny_128", _seeded(make), lambda dt: inputs(dt, 128, 128), dtypes=(torch.bfloat16,),
                 layouts=(False,)),
            Case("tiny_192x320", _seeded(make), lambda dt: inputs(dt, 192, 320), dtypes=(torch.float32,),
                 layouts=(True,))]


def _ssim_cases() -> list[Case]:
    return [Case("maps", SSIMLoss, lambda dt: (_randn(2, 1, 70, 90, dtype=dt).sigmoid(),
                                               (_randn(2, 1, 70, 90, dtype=dt, seed=1) > 0).to(dt)))]


register(RMSNorm, LeanRMSNorm, _norm_cases)
register(ConvNormAct, LeanConvNormAct, _conv_norm_act_cases)
register(WindowAttention, LeanWindowAttention, _window_attention_cases)
register(SwinBlock, LeanSwinBlock, _swin_block_cases)
register(CoA, LeanCoA, _coa_cases)
register(SegmentationDecoder, LeanSegmentationDecoder, _decoder_cases)
register(DepthDecoder, LeanDepthDecoder, _depth_decoder_cases)
register(PDFNet, LeanPDFNet, _model_cases)
register(SSIMLoss, LeanSSIMLoss, _ssim_cases)

__all__ = ["REPLACEMENTS", "Case", "Replacement", "is_lean", "make_lean", "register"]
