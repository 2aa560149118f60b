"""PDFNet's loss terms, as the official code defines them (models/utils.py and PDFNet.py, HEAD f4e218b).

Every term computes in float32 whatever the autocast dtype (logits are cast first). Shapes: logits [B,1,h,w] (resized
to the target's size here), mask [B,1,H,W] in [0,1], depth [B,1,H,W] in [0,1].

A term is a registered class (:data:`pdfnet.registry.LOSS_TERMS`) built as ``Term(cfg: LossConfig, variant)`` and
called as ``term(logits, targets) -> scalar``; ``outputs`` says which outputs it applies to (``seg``: every
segmentation output, ``depth``: every depth-head output), ``weight_key`` which ``loss:`` key holds its weight (a term
without one takes its weight from ``loss.terms``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LossConfig
from ..registry import LOSS_TERMS
from ..variants import official_version

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


class Targets(NamedTuple):
    """What the terms compare an output with: mask [B,1,H,W] float in [0,1], depth [B,1,H,W] (min-max normalised per
    sample) and the structure loss's per-pixel weight [B,1,H,W] (:func:`boundary_weight`, computed once per batch)."""

    mask: torch.Tensor
    depth: torch.Tensor
    pixel_weight: torch.Tensor


class LossTerm(nn.Module):
    """Base of a loss term (see the module docstring)."""

    outputs = "seg"
    weight_key: str | None = None

    def __init__(self, cfg: LossConfig, variant: str) -> None:
        super().__init__()


def to_size(logits: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Logits resized (bilinear, as the official loss) to the spatial size of ``ref``, in float32."""
    logits = logits.float()
    if logits.shape[-2:] == ref.shape[-2:]:
        return logits
    return F.interpolate(logits, size=ref.shape[-2:], mode="bilinear")


def boundary_weight(mask: torch.Tensor, edge_weight: float = 5.0) -> torch.Tensor:
    """1 + edge_weight·|avgpool31(mask) − mask| [B,1,H,W], zero-padded 31x31 mean (count includes the padding), as
    a 31x1 then a 1x31 mean (the box filter is separable: the same value up to float rounding, at 2/31 of the cost)."""
    mask = mask.float()
    box = F.avg_pool2d(F.avg_pool2d(mask, (31, 1), stride=1, padding=(15, 0)), (1, 31), stride=1, padding=(0, 15))
    return 1 + edge_weight * (box - mask).abs()


def structure_loss(logits: torch.Tensor, mask: torch.Tensor, edge_weight: float = 5.0,
                   weight: torch.Tensor | None = None, smooth: float = 1e-6) -> torch.Tensor:
    """Boundary-weighted BCE + weighted IoU with ``weight`` = :func:`boundary_weight` (computed here when not given).
    wBCE = Σ w·BCE / Σ w and wIoU = 1 − (I + s)/(U − I + s) per image, then the batch mean of their sum; ``smooth``
    s is 1e-6 in the v2026 code and 1 in v2025.03."""
    logits, mask = logits.float(), mask.float()
    weight = boundary_weight(mask, edge_weight) if weight is None else weight
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    probs = logits.sigmoid()
    inter = (probs * mask * weight).sum(dim=(2, 3))
    union = ((probs + mask) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + smooth) / (union - inter + smooth)
    return (wbce + wiou).mean()


def gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian [size] whose outer product is the official 2-D SSIM window."""
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)])
    return g / g.sum()


class SSIMLoss(nn.Module):
    """1 − (1 + SSIM)/2 with an 11x11 Gaussian window (σ 1.5), zero padding, C1 = 0.01², C2 = 0.03²; SSIM averaged
    over all pixels of the batch. probs, target: [B,1,H,W].

    The Gaussian window is separable, so each blur is an 11-tap conv along H then W (:meth:`blur`), run once on the
    five maps stacked."""

    def __init__(self, window: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        taps = gaussian_taps(window, sigma)
        self.window_taps = tuple(taps.tolist())
        self.register_buffer("taps", taps, persistent=False)

    def blur(self, t: torch.Tensor) -> torch.Tensor:
        """Zero-padded Gaussian blur of each channel of t [B,C,H,W]."""
        c, n = t.shape[1], self.taps.numel()
        taps = self.taps.to(t)
        t = F.conv2d(t, taps.view(1, 1, n, 1).expand(c, 1, n, 1), padding=(n // 2, 0), groups=c)
        return F.conv2d(t, taps.view(1, 1, 1, n).expand(c, 1, 1, n), padding=(0, n // 2), groups=c)

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = probs.float(), target.float()
        mu_x, mu_y, xx, yy, xy = self.blur(torch.cat([x, y, x * x, y * y, x * y], dim=1)).chunk(5, dim=1)
        sigma_x, sigma_y, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
        c1, c2 = 0.01**2, 0.03**2
        ssim = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
        return 1 - (1 + ssim.mean()) / 2


class IntegrityPriorLoss(nn.Module):
    """The depth integrity prior: foreground depth should be smooth (close to its mean), background depth is free.

    With p = σ(logits), py = m·p + (1−m)(1−p) (probability of the true class), FP = (1−py)·p, FN = (1−py)·m,
    diff = (d − mean_fg(d))², where mean_fg is over the whole batch's GT foreground (as the official code):
        variance = mean(−log(py + ε) · (diff·FP + (1 − diff)·FN) · py)
        gradient = mean(−log(py + ε) · (|Sobel_x d| + |Sobel_y d|))
    and the loss is variance + gradient. ε = 1e-8.
    """

    def __init__(self, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.register_buffer("sobel", torch.stack([SOBEL_X, SOBEL_X.t()])[:, None], persistent=False)

    def forward(self, probs: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p, d, m = probs.float(), depth.float(), mask.float()
        py = m * p + (1 - m) * (1 - p)
        false_pos = (1 - py) * p
        false_neg = (1 - py) * m
        neg_log = -torch.log(py + self.epsilon)
        diff = (d - (d * m).sum() / (m.sum() + self.epsilon)) ** 2
        variance = (neg_log * (diff * false_pos + (1 - diff) * false_neg) * py).mean()
        grads = F.conv2d(d, self.sobel.to(d), padding=1).abs()  # [B,2,H,W]: |∂x d|, |∂y d|
        gradient = (grads[:, 0:1] * neg_log + grads[:, 1:2] * neg_log).mean()
        return variance + gradient


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lambd: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss: sqrt(mean(g²) − λ·mean(g)² + eps), g = log(target + eps) − log(pred + eps)."""
    g = torch.log(target.float() + eps) - torch.log(pred.float() + eps)
    return torch.sqrt((g**2).mean() - lambd * g.mean() ** 2 + eps)


@LOSS_TERMS.register("seg")
class SegmentationTerm(LossTerm):
    """The official per-output segmentation loss: structure (wBCE + wIoU) + ``ssim_weight`` · SSIM on σ(logits)."""

    weight_key = "seg_weight"

    def __init__(self, cfg: LossConfig, variant: str) -> None:
        super().__init__(cfg, variant)
        self.smooth = official_version(variant).wiou_smooth if cfg.wiou_smooth is None else cfg.wiou_smooth
        self.ssim_weight = cfg.ssim_weight
        self.ssim = SSIMLoss()

    def forward(self, logits: torch.Tensor, t: Targets) -> torch.Tensor:
        up = to_size(logits, t.mask)
        return (structure_loss(up, t.mask, weight=t.pixel_weight, smooth=self.smooth)
                + self.ssim_weight * self.ssim(up.sigmoid(), t.mask))


@LOSS_TERMS.register("integrity")
class IntegrityPriorTerm(LossTerm):
    """The depth integrity prior (:class:`IntegrityPriorLoss`) on σ(logits) of every segmentation output."""

    weight_key = "integrity_weight"

    def __init__(self, cfg: LossConfig, variant: str) -> None:
        super().__init__(cfg, variant)
        self.prior = IntegrityPriorLoss()

    def forward(self, logits: torch.Tensor, t: Targets) -> torch.Tensor:
        return self.prior(to_size(logits, t.depth).sigmoid(), t.depth, t.mask)


@LOSS_TERMS.register("depth")
class SiLogTerm(LossTerm):
    """SiLog between σ(depth logits) of every depth-head output and the depth target."""

    outputs = "depth"
    weight_key = "depth_weight"

    def __init__(self, cfg: LossConfig, variant: str) -> None:
        super().__init__(cfg, variant)
        self.lambd = cfg.silog_lambda

    def forward(self, logits: torch.Tensor, t: Targets) -> torch.Tensor:
        return silog_loss(to_size(logits, t.depth).sigmoid(), t.depth, self.lambd)
