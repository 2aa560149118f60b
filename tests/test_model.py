"""The reference PDFNet model: shapes, gradients, batch independence, official quirks, clear errors. (The CPU forms
of pdfnet/lean are checked against this model in test_lean.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pdfnet.build import build_model
from pdfnet.config import ModelConfig
from pdfnet.models import PDFNet, count_parameters
from pdfnet.models.decoder import upsample_conv
from pdfnet.models.fusion import boundary_integrity_split, expand_grid, grid_cell_means
from pdfnet.models.official import OFFICIAL_PARAMETER_COUNTS, SOBEL_PARAMETERS
from pdfnet.models.pdfnet import merge_grid, split_grid
from pdfnet.ops import normalize_depth
from pdfnet.variants import VARIANTS


def _inputs(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g), torch.rand(b, 1, h, w, generator=g) * 5 + 2


@pytest.fixture(scope="module")
def tiny() -> PDFNet:
    torch.manual_seed(0)
    return PDFNet(backbone="swin_tiny_test", emb_dim=16, variant="v2026").eval()


@pytest.mark.parametrize("b, h, w", [(1, 128, 128), (2, 256, 256), (1, 320, 320), (1, 384, 384), (2, 256, 384)])
def test_output_shapes(tiny, b, h, w):
    image, depth = _inputs(b, h, w)
    with torch.no_grad():
        out = tiny(image, depth)
    assert len(out) == 6
    assert out[0].shape == (b, 1, h, w)
    sizes = tiny.patch_pyramid_sizes(h, w)
    for side, size in zip(out[1:], [sizes[0], sizes[1], sizes[2], sizes[3], sizes[4]]):
        assert side.shape == (b, 1, *size)
    assert all(torch.isfinite(o).all() for o in out)


@pytest.mark.parametrize("variant", ["v2026", "v2025.03"])
def test_forward_backward_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = PDFNet(backbone="swin_tiny_test", emb_dim=16, variant=variant, drop_path=0.0).train()
    image, depth = _inputs(2, 128, 128)
    seg, dep = model(image, depth, return_depth=True)
    assert [d.shape[-2:] for d in dep][0] == (64, 64)
    loss = sum(o.float().square().mean() for o in seg + dep)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_depth_normalisation_is_per_sample(tiny):
    image, depth = _inputs(2, 128, 128)
    depth[1] = depth[1] * 10 + 3  # a different range must not change sample 0
    with torch.no_grad():
        both = tiny(image, depth)[0]
        alone = [tiny(image[i:i + 1], depth[i:i + 1])[0] for i in range(2)]
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=0)
    norm = normalize_depth(depth)
    assert torch.allclose(norm.flatten(1).amin(1), torch.zeros(2)) and torch.allclose(norm.flatten(1).amax(1),
                                                                                         torch.ones(2))
    assert torch.equal(normalize_depth(torch.full((1, 1, 4, 4), 3.0)), torch.zeros(1, 1, 4, 4))  # no NaN


def test_patch_grid_order_matches_official_split():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    patches = split_grid(x, 8)
    official = torch.cat([x[..., r * 2:(r + 1) * 2, c * 2:(c + 1) * 2] for r in range(8) for c in range(8)], dim=0)
    assert torch.equal(patches, official)
    assert torch.equal(merge_grid(patches, 8), x)


def test_bis_quirks():
    logits = torch.randn(1, 1, 8, 8) * 3
    # h // 8 == 1: a 1x1 pool is the identity, so there is no boundary at all.
    boundary, integrity = boundary_integrity_split(logits, VARIANTS["v2026"])
    assert torch.count_nonzero(boundary) == 0
    torch.testing.assert_close(integrity, logits.sigmoid())
    # h // 8 even (v2026): thresholded; the zero-padded pool marks the frame of a flat confident map as boundary.
    flat = torch.full((1, 1, 32, 32), 6.0)
    boundary, _ = boundary_integrity_split(flat, VARIANTS["v2026"])
    assert set(boundary.unique().tolist()) <= {0.0, 1.0}
    assert boundary[0, 0, 0].sum() > 0 and boundary[0, 0, 16, 16] == 0
    # v2025.03: continuous, doubled.
    boundary_v1, integrity_v1 = boundary_integrity_split(flat, VARIANTS["v2025.03"])
    assert 0 < boundary_v1.max() < 2 and not set(boundary_v1.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(integrity_v1 <= flat.sigmoid())


def test_grid_helpers():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    means = grid_cell_means(x, 4)
    assert means.shape == (1, 1, 4, 4) and means[0, 0, 0, 0] == (0 + 1 + 8 + 9) / 4
    assert expand_grid(means, (8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="not divisible"):
        grid_cell_means(torch.zeros(1, 1, 10, 10), 4)


@pytest.mark.parametrize(
    "image_shape, depth_shape, message",
    [
        ((1, 4, 128, 128), (1, 1, 128, 128), r"image must be \[B,3,H,W\]"),
        ((1, 3, 128, 128), (1, 3, 128, 128), r"depth must be \[B,1,H,W\]"),
        ((1, 3, 128, 128), (1, 1, 64, 64), r"depth must be \[B,1,H,W\]"),
        ((1, 3, 200, 256), (1, 1, 200, 256), "multiples of 64"),
        ((1, 3, 64, 64), (1, 1, 64, 64), "at least 128"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, image_shape, depth_shape, message):
    with pytest.raises(ValueError, match=message):
        tiny(torch.zeros(image_shape), torch.zeros(depth_shape))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = PDFNet(backbone="swin_tiny_test", emb_dim=16, drop_path=0.0).train()
    b = PDFNet(backbone="swin_tiny_test", emb_dim=16, drop_path=0.0).train()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    image, depth = _inputs(1, 128, 128)
    for m in (a, b):
        torch.manual_seed(5)  # same dropout masks
        sum(o.mean() for o in m(image, depth)).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_bf16_autocast_runs(tiny):
    image, depth = _inputs(1, 128, 128)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(image, depth)
    assert torch.isfinite(out[0].float()).all()


def test_ablation_switches_and_factory():
    cfg = ModelConfig(backbone="swin_tiny_test", emb_dim=16, use_depth=False, use_patches=False, depth_head=False)
    model = build_model(cfg).eval()
    assert not model.has_depth_head
    image, depth = _inputs(1, 256, 256)
    with torch.no_grad():
        out = model(image, depth)
        changed_depth = model(image, depth * 0 + torch.rand_like(depth))
    torch.testing.assert_close(out[0], changed_depth[0])  # depth is ignored
    with pytest.raises(RuntimeError, match="depth head"):
        model(image, depth, return_depth=True)


@pytest.mark.parametrize("variant, depth_head, expected", [
    ("v2026", False, OFFICIAL_PARAMETER_COUNTS["v2026"]),
    ("v2025.03", True, OFFICIAL_PARAMETER_COUNTS["v2025.03"]),
])
def test_parameter_counts_equal_the_official_models(variant, depth_head, expected):
    with torch.device("meta"):
        model = PDFNet(variant=variant, depth_head=depth_head)
    # The official models also register the 18 frozen Sobel weights of their loss module; ours keep them in the loss.
    assert count_parameters(model) + SOBEL_PARAMETERS == expected




def test_the_shallow_branch_recomputes_its_upsampled_input():
    """upsample_conv = conv(resize(x, 4x)) with the upsampled map recomputed in backward, not kept: same values and
    gradients as the plain expression, and nothing of size [B,C,4H,4W] saved."""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 8, kernel_size=4, stride=4)
    x = torch.randn(2, 6, 37, 29, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t.numel()), t)[1], lambda t: t):
        got = upsample_conv(conv, x, 4)
    assert max(saved) < 4 * x.numel()
    expected = conv(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=True))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(got)
    ours = torch.autograd.grad(got, [conv.weight, x], g)
    theirs = torch.autograd.grad(expected, [conv.weight, x], g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_norm_keeps_only_its_input_and_statistics_for_backward():
    """RMSNorm (fused with the SiLU in the conv units) saves x in its own dtype (bf16 under autocast) and the
    per-position 1/rms, and its written-out backward equals autograd through the plain expression."""
    from pdfnet.models.blocks import rms_norm

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 16, 9, 7, dtype=dtype, requires_grad=True)
        w = torch.rand(16, requires_grad=True)
        saved = []

        def pack(t: torch.Tensor, saved=saved) -> torch.Tensor:
            saved.append((t.shape, t.dtype))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = rms_norm(x, w, 1, 1e-6, silu=True)
        assert y.dtype == dtype
        assert sorted(saved, key=str) == sorted([(x.shape, dtype), (w.shape, w.dtype),
                                                 (torch.Size([2, 1, 9, 7]), torch.float32)], key=str)
        x32 = x.float()
        plain = F.silu(w.view(-1, 1, 1) * (x32 * torch.rsqrt(x32.pow(2).mean(1, keepdim=True) + 1e-6)).to(dtype))
        torch.testing.assert_close(y, plain.to(dtype))
        g = torch.randn_like(y)
        for a, b in zip(torch.autograd.grad(y, [x, w], g), torch.autograd.grad(plain.to(dtype), [x, w], g)):
            tol = 1e-5 if dtype == torch.float32 else 3e-2
            torch.testing.assert_close(a.float(), b.float(), atol=tol * b.abs().max().item(), rtol=0)
