"""PDFNet losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pdfnet.config import LossConfig
from pdfnet.losses import (
    IntegrityPriorLoss,
    PDFNetLoss,
    SSIMLoss,
    boundary_weight,
    silog_loss,
    structure_loss,
)
from pdfnet.losses.terms import Targets, gaussian_taps
from pdfnet.variants import VARIANTS


def test_structure_loss_uniform_logits_no_edges():
    logits, mask = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    n = 64
    # BCE(0, 0) = log 2 everywhere, weights 1; IoU: I = 0, U = 0.5 n.
    expected = math.log(2) + 1 - 1e-6 / (0.5 * n + 1e-6)
    assert structure_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)


def test_structure_loss_single_pixel_by_hand():
    z = 0.7
    w = 1 + 5 * (1 - 1 / 961)  # the zero-padded 31x31 pool sees one foreground pixel among 961
    p = 1 / (1 + math.exp(-z))
    bce = math.log1p(math.exp(-z))
    expected = bce + 1 - (p * w + 1e-6) / (w + 1e-6)
    assert structure_loss(torch.full((1, 1, 1, 1), z), torch.ones(1, 1, 1, 1)).item() == pytest.approx(expected,
                                                                                                        rel=1e-6)


def test_ssim_loss_identical_maps_is_zero_and_a_hand_case():
    x = torch.rand(2, 1, 12, 12)
    assert SSIMLoss()(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    wc = (gaussian_taps()[5] ** 2).item()  # 1x1 images: only the centre tap sees the pixel
    c1, c2 = 0.01**2, 0.03**2
    ssim = c1 * c2 / ((wc**2 + c1) * (wc - wc**2 + c2))
    got = SSIMLoss()(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).item()
    assert got == pytest.approx(1 - (1 + ssim) / 2, rel=1e-5)


def test_integrity_prior_by_hand():
    p = torch.tensor([[[[0.5, 0.5]]]])
    m = torch.tensor([[[[1.0, 0.0]]]])
    d = torch.tensor([[[[0.2, 0.6]]]])
    nl = -math.log(0.5 + 1e-8)
    # variance: pixel 0 (FN) nl*(1-0)*0.5*0.5, pixel 1 (FP) nl*0.16*0.25*0.5 -> mean nl*0.135
    # gradient: Sobel-x with zero padding gives 2*0.6 and -2*0.2; Sobel-y is 0 -> mean nl*0.8
    assert IntegrityPriorLoss()(p, d, m).item() == pytest.approx(nl * (0.135 + 0.8), rel=1e-5)
    perfect = IntegrityPriorLoss()(m, d, m).item()
    assert abs(perfect) < 1e-6


def test_silog_by_hand():
    t = torch.tensor([0.2, 0.4, 0.8])
    assert silog_loss(t, t).item() == pytest.approx(math.sqrt(1e-6), rel=1e-4)
    g = torch.log(t + 1e-6) - torch.log(2 * t + 1e-6)
    expected = math.sqrt(float((g**2).mean() - 0.5 * g.mean() ** 2) + 1e-6)
    assert silog_loss(2 * t, t).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(math.sqrt(0.5 * math.log(2) ** 2 + 1e-6), rel=1e-4)  # scale-invariant part


def test_total_is_the_weighted_sum_with_deep_supervision():
    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    depth = torch.rand(2, 1, 16, 16)
    main = torch.randn(2, 1, 16, 16)
    side = torch.randn(2, 1, 8, 8)
    loss = PDFNetLoss(LossConfig())
    total, parts = loss([main, side], mask, depth, [torch.randn(2, 1, 8, 8)])
    up = torch.nn.functional.interpolate(side, size=(16, 16), mode="bilinear")
    seg = (structure_loss(main, mask) + 0.5 * SSIMLoss()(main.sigmoid(), mask)
           + 0.5 * (structure_loss(up, mask) + 0.5 * SSIMLoss()(up.sigmoid(), mask)))
    assert parts["seg"].item() == pytest.approx(seg.item(), rel=1e-6)
    assert total.item() == pytest.approx((parts["seg"] + 0.5 * parts["integrity"] + 0.1 * parts["depth"]).item(),
                                         rel=1e-6)
    no_depth, parts_nd = PDFNetLoss(LossConfig(depth_weight=0.0))([main, side], mask, depth)
    assert parts_nd["depth"].item() == 0 and no_depth.item() == pytest.approx(
        (parts["seg"] + 0.5 * parts["integrity"]).item(), rel=1e-6)


def test_low_precision_logits_are_safe_and_differentiable():
    torch.manual_seed(1)
    mask = (torch.rand(1, 1, 16, 16) > 0.5).float()
    depth = torch.rand(1, 1, 16, 16)
    logits = (torch.randn(1, 1, 16, 16) * 8).requires_grad_()
    total32, _ = PDFNetLoss()([logits], mask, depth)
    total16, _ = PDFNetLoss()([logits.bfloat16()], mask, depth)
    assert total16.dtype == torch.float32 and torch.isfinite(total16)
    assert total16.item() == pytest.approx(total32.item(), rel=2e-2)
    total16.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_separable_filters_equal_the_official_2d_ones():
    """The box and Gaussian filters run as two 1-D passes; the official code uses 2-D kernels."""
    torch.manual_seed(2)
    mask = (torch.rand(2, 1, 40, 40) > 0.6).float()
    pool2d = torch.nn.functional.avg_pool2d(mask, kernel_size=31, stride=1, padding=15)
    torch.testing.assert_close(boundary_weight(mask), 1 + 5 * (pool2d - mask).abs(), rtol=0, atol=1e-6)

    x = torch.rand(2, 1, 40, 40, requires_grad=True)
    taps = gaussian_taps()
    win = (taps[:, None] @ taps[None, :])[None, None]  # the official 11x11 window

    def blur(t):
        return torch.nn.functional.conv2d(t, win, padding=5)

    mu_x, mu_y = blur(x), blur(mask)
    sx, sy, sxy = blur(x * x) - mu_x**2, blur(mask * mask) - mu_y**2, blur(x * mask) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + 1e-4) * (2 * sxy + 9e-4)) / ((mu_x**2 + mu_y**2 + 1e-4) * (sx + sy + 9e-4))
    official = 1 - (1 + ssim.mean()) / 2
    ours = SSIMLoss()(x, mask)
    assert ours.item() == pytest.approx(official.item(), abs=1e-6)
    (expected,) = torch.autograd.grad(official, x)
    (got,) = torch.autograd.grad(ours, x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_depth_target_is_min_max_normalised_per_sample_as_the_official_forward():
    """After a rotation/crop the target no longer spans [0, 1]; the official forward re-normalises it (over the batch;
    per sample here), so the integrity and SiLog terms see a [0, 1] map."""
    torch.manual_seed(2)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    logits, depth_logits = torch.randn(2, 1, 16, 16), [torch.randn(2, 1, 16, 16)]
    raw = 0.2 + 0.5 * torch.rand(2, 1, 16, 16)  # spans ~[0.2, 0.7], as an augmented map does
    lo = raw.flatten(1).min(1).values.view(2, 1, 1, 1)
    hi = raw.flatten(1).max(1).values.view(2, 1, 1, 1)
    normalised = (raw - lo) / (hi - lo)
    loss = PDFNetLoss(LossConfig())
    total, parts = loss([logits], mask, raw, depth_logits)
    probs = logits.sigmoid()
    assert parts["integrity"].item() == pytest.approx(IntegrityPriorLoss()(probs, normalised, mask).item(), rel=1e-5)
    assert parts["depth"].item() == pytest.approx(silog_loss(depth_logits[0].sigmoid(), normalised).item(), rel=1e-5)
    assert total.item() == pytest.approx(loss([logits], mask, normalised, depth_logits)[0].item(), rel=1e-6)
    # the raw target would have given another loss: the normalisation is not a no-op here
    assert abs(IntegrityPriorLoss()(probs, raw, mask).item() - parts["integrity"].item()) > 1e-3


def test_weighted_iou_smoothing_follows_the_official_variant():
    from pdfnet.config import Config

    logits, mask = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    # I = 0, U = 0.5·64: v2025.03's +1 gives wIoU = 1 - 1/33, v2026's 1e-6 gives ~1
    assert structure_loss(logits, mask, smooth=1.0).item() == pytest.approx(math.log(2) + 1 - 1 / 33, rel=1e-6)
    cfg = Config()
    assert {v: VARIANTS[v].wiou_smooth for v in VARIANTS} == {"v2025.03": 1.0, "v2026": 1e-6}
    for variant in ("v2025.03", "v2026"):
        cfg.model.variant = variant
        assert PDFNetLoss.from_config(cfg).terms["seg"].smooth == VARIANTS[variant].wiou_smooth
    cfg.loss.wiou_smooth = 0.5  # an explicit loss.wiou_smooth wins over the variant
    assert PDFNetLoss.from_config(cfg).terms["seg"].smooth == 0.5
    from pdfnet.config import ConfigError, load_config

    assert load_config(None, ["loss.wiou_smooth=1"]).loss.wiou_smooth == 1.0
    with pytest.raises(ConfigError, match="loss.wiou_smooth"):
        load_config(None, ["loss.wiou_smooth=-1"])


def test_the_loss_is_the_sum_of_its_registered_terms_and_reports_each_by_name():
    """A term of one's own is a class plus a weight (loss.terms); the parts hold every term by name."""
    from pdfnet.losses.dice import DiceTerm

    torch.manual_seed(3)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    depth = torch.rand(2, 1, 16, 16)
    main, side = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8)
    plain_total, plain = PDFNetLoss(LossConfig())([main, side], mask, depth)
    total, parts = PDFNetLoss(LossConfig(terms={"dice": 0.3}))([main, side], mask, depth)
    assert list(parts) == ["seg", "integrity", "depth", "dice", "main"]
    term = DiceTerm(LossConfig(), "v2026")
    up = torch.nn.functional.interpolate(side, size=(16, 16), mode="bilinear")
    targets = Targets(mask, depth, None)
    dice = term(main, targets) + 0.5 * term(up, targets)
    assert parts["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert total.item() == pytest.approx(plain_total.item() + 0.3 * dice.item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss.integrity_weight"):
        PDFNetLoss(LossConfig(terms={"integrity": 1.0}))
