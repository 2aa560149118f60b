"""PDFNet's training losses, as the official code defines them (models/utils.py and PDFNet.py, HEAD f4e218b).

All losses compute in float32 whatever the autocast dtype (logits are cast first), so they are safe under bf16/fp16.
Shapes: logits/probabilities [B,1,H,W], mask [B,1,H,W] in [0,1], depth [B,1,H,W] in [0,1].

Total (weights from :class:`pdfnet.config.LossConfig`):
    L = Σ_i w_i [structure(p_i, m) + ssim_w · SSIM(σ(p_i), m)]
      + integrity_w · Σ_i w_i IntegrityPrior(σ(p_i), d, m)
      + depth_w · Σ_j w_j SiLog(σ(q_j), d)
with w_0 = 1 for the main output and ``side_weight`` (0.5) for side outputs; every prediction is resized
(bilinear) to the target's size first. Official weights: ssim 0.5, integrity 1/2, depth 1/10.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig
from .models.blocks import checkpointed
from .models.pdfnet import normalize_depth

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


# Weighted-IoU smoothing of the structure loss in each official code version (models/utils.py).
WIOU_SMOOTH = {"v2025.03": 1.0, "v2026": 1e-6}


def boundary_weight(mask: torch.Tensor, edge_weight: float = 5.0) -> torch.Tensor:
    """1 + edge_weight·|avgpool31(mask) − mask| [B,1,H,W], zero-padded 31x31 mean (count includes the padding).

    The box mean is taken as a 31x1 then a 1x31 mean: the same value as the 2-D pool (up to float rounding) at
    2/31 of the cost, which matters on CPU where the 2-D pool was a tenth of a training step."""
    mask = mask.float()
    box = F.avg_pool2d(F.avg_pool2d(mask, (31, 1), stride=1, padding=(15, 0)), (1, 31), stride=1, padding=(0, 15))
    return 1 + edge_weight * (box - mask).abs()


def structure_loss(logits: torch.Tensor, mask: torch.Tensor, edge_weight: float = 5.0,
                   weight: torch.Tensor | None = None, smooth: float = 1e-6) -> torch.Tensor:
    """Boundary-weighted BCE + weighted IoU with ``weight`` = :func:`boundary_weight` (computed here when not given;
    the total loss computes it once for all outputs). wBCE = Σ w·BCE / Σ w and wIoU = 1 − (I + s)/(U − I + s) per
    image, then the batch mean of their sum; ``smooth`` s is 1e-6 in the v2026 code and 1 in v2025.03
    (:data:`WIOU_SMOOTH`)."""
    logits, mask = logits.float(), mask.float()
    weight = boundary_weight(mask, edge_weight) if weight is None else weight
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    probs = logits.sigmoid()
    inter = (probs * mask * weight).sum(dim=(2, 3))
    union = ((probs + mask) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + smooth) / (union - inter + smooth)
    return (wbce + wiou).mean()


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)])
    return g / g.sum()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = _gaussian_1d(size, sigma)
    return (g[:, None] @ g[None, :])[None, None]  # [1,1,size,size]


def _blur(t: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Zero-padded separable blur of t [B,C,H,W] by the 1-D ``taps`` along H then W, as weighted sums of shifted
    slices (on CPU several times faster than single-channel convolutions)."""
    pad = len(taps) // 2
    for dim in (-2, -1):
        n = t.shape[dim]
        padded = F.pad(t, (0, 0, pad, pad) if dim == -2 else (pad, pad, 0, 0))
        t = padded.narrow(dim, 0, n) * taps[0]
        for k in range(1, len(taps)):
            t.add_(padded.narrow(dim, k, n), alpha=taps[k])
    return t


class _SymmetricBlur(torch.autograd.Function):
    """:func:`_blur` with a symmetric kernel. Zero-padded correlation with a symmetric kernel is a symmetric linear
    map, so its backward is the same blur of the gradient: nothing is kept, and no per-tap gradient buffers are
    built (autograd through the shifted slices zero-filled one padded map per tap)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
        ctx.taps = taps
        return _blur(t, taps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _blur(grad, ctx.taps), None


class SSIMLoss(nn.Module):
    """1 − (1 + SSIM)/2 with an 11x11 Gaussian window (σ 1.5), zero padding, C1 = 0.01², C2 = 0.03²; SSIM averaged
    over all pixels of the batch.

    The Gaussian is separable: each blur is an 11-tap pass along H then W (:func:`_blur`), run once for the five
    blurred maps stacked, with the blur itself as its backward (the official 11x11 kernel up to float rounding). On
    CPU the 2-D kernel's backward was a third of a training step, and single-channel convolutions are slow there too:
    at 1024² this takes a few percent of the time of five separable convolutions, forward and backward."""

    def __init__(self, window: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        self.taps = tuple(_gaussian_1d(window, sigma).tolist())
        if self.taps != self.taps[::-1]:
            raise ValueError("the SSIM window must be symmetric")

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = probs.float(), target.float()
        stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        mu_x, mu_y, xx, yy, xy = _SymmetricBlur.apply(stacked, self.taps).chunk(5, dim=1)
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
        grads = F.conv2d(d, self.sobel.to(d.device), padding=1).abs()  # [B,2,H,W]: |∂x d|, |∂y d|
        gradient = (grads[:, 0:1] * neg_log + grads[:, 1:2] * neg_log).mean()
        return variance + gradient


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lambd: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss: sqrt(mean(g²) − λ·mean(g)² + eps), g = log(target + eps) − log(pred + eps)."""
    g = torch.log(target.float() + eps) - torch.log(pred.float() + eps)
    return torch.sqrt((g**2).mean() - lambd * g.mean() ** 2 + eps)


def _to_size(logits: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] == ref.shape[-2:]:
        return logits
    return F.interpolate(logits.float(), size=ref.shape[-2:], mode="bilinear")


class PDFNetLoss(nn.Module):
    """Deep-supervised total loss. Returns (total, parts) where parts holds the detached terms ``seg``, ``main``
    (the main output's segmentation loss), ``integrity`` and ``depth`` (0 without a depth head), unweighted.

    ``recompute=True`` (``model.grad_checkpointing: all``) recomputes each output's terms in backward instead of
    keeping their full-resolution intermediates (about 1.5 GiB at 1024², batch 2); the values are unchanged."""

    def __init__(self, cfg: LossConfig | None = None, recompute: bool = False, variant: str = "v2026") -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.recompute = recompute
        self.wiou_smooth = WIOU_SMOOTH[variant] if self.cfg.wiou_smooth is None else self.cfg.wiou_smooth
        self.ssim = SSIMLoss()
        self.integrity = IntegrityPriorLoss()

    @classmethod
    def from_config(cls, cfg) -> PDFNetLoss:
        """The loss a run's :class:`~pdfnet.config.Config` asks for: its ``loss`` weights, the official smoothing of
        its ``model.variant``, recomputation in backward under ``model.grad_checkpointing: all``."""
        return cls(cfg.loss, recompute=cfg.model.grad_checkpointing == "all", variant=cfg.model.variant)

    def _output_terms(self, logits: torch.Tensor, mask: torch.Tensor, depth_target: torch.Tensor,
                      pixel_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One segmentation output: (structure + SSIM term, integrity-prior term or None when its weight is 0)."""
        up = _to_size(logits, mask)
        term = (structure_loss(up, mask, weight=pixel_weight, smooth=self.wiou_smooth)
                + self.cfg.ssim_weight * self.ssim(up.float().sigmoid(), mask))
        if not self.cfg.integrity_weight:
            return term, None
        return term, self.integrity(_to_size(logits, depth_target).float().sigmoid(), depth_target, mask)

    def _depth_term(self, logits: torch.Tensor, depth_target: torch.Tensor) -> torch.Tensor:
        return silog_loss(_to_size(logits, depth_target).float().sigmoid(), depth_target, self.cfg.silog_lambda)

    def forward(self, seg_logits: list[torch.Tensor], mask: torch.Tensor, depth_target: torch.Tensor,
                depth_logits: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        # The official training forward min-max normalises the depth target after augmentation (over the whole
        # batch); per sample here, as the input depth: identical at batch 1, independent of batch-mates otherwise.
        depth_target = normalize_depth(depth_target.float())
        seg = integrity = depth = mask.new_zeros((), dtype=torch.float32)
        main = None
        pixel_weight = boundary_weight(mask, cfg.edge_weight)
        for i, logits in enumerate(seg_logits):
            weight = 1.0 if i == 0 else cfg.side_weight
            term, prior = checkpointed(self.recompute, self._output_terms, logits, mask, depth_target, pixel_weight)
            seg = seg + weight * term
            main = term if i == 0 else main
            if prior is not None:
                integrity = integrity + weight * prior
        if depth_logits and cfg.depth_weight:
            for i, logits in enumerate(depth_logits):
                weight = 1.0 if i == 0 else cfg.side_weight
                depth = depth + weight * checkpointed(self.recompute, self._depth_term, logits, depth_target)
        total = seg + cfg.integrity_weight * integrity + cfg.depth_weight * depth
        # Detached tensors, not floats: reading them is the caller's choice (a device sync on CUDA).
        parts = {"seg": seg.detach(), "main": (main if main is not None else seg).detach(),
                 "integrity": integrity.detach(), "depth": depth.detach()}
        return total, parts
