"""PDFNet model: shapes, gradients, batch independence, and the exact equivalence of our memory-saving paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pdfnet.config import ModelConfig
from pdfnet.models import PDFNet, build_model, count_parameters
from pdfnet.models.blocks import resize
from pdfnet.models.decoder import RowStream, SegmentationDecoder, local_rows, resize_rows, source_rows, upsample4_conv4
from pdfnet.models.fusion import boundary_integrity_split, expand_grid, grid_cell_means
from pdfnet.models.official import OFFICIAL_PARAMETER_COUNTS, SOBEL_PARAMETERS
from pdfnet.models.pdfnet import merge_grid, normalize_depth, split_grid


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


def test_inference_path_equals_training_path(tiny):
    """Without autograd the decoder runs its full-resolution part in strips, in place; it must not change results."""
    image, depth = _inputs(1, 256, 256, seed=3)
    with torch.no_grad():
        fast = tiny(image, depth)
    plain = tiny(image, depth)  # grad enabled: the straightforward path
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b.detach(), atol=2e-5, rtol=0)


def test_upsample4_conv4_equals_upsample_then_strided_conv():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 8, kernel_size=4, stride=4)
    x = torch.randn(2, 6, 37, 29)
    expected = conv(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=True))
    with torch.no_grad():
        got = upsample4_conv4(x, conv, strip_rows=10)
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(upsample4_conv4(x, conv, strip_rows=7), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture
def cpu_capability(monkeypatch):
    """Sets what ``torch.backends.cpu.get_cpu_capability()`` reports (it decides the training conv layout)."""
    from pdfnet.models import blocks

    def pretend(capability: str) -> None:
        monkeypatch.setattr(blocks.torch.backends.cpu, "get_cpu_capability", lambda: capability)
        blocks._cpu_nhwc_weight_grad_is_fast.cache_clear()

    yield pretend
    monkeypatch.undo()
    blocks._cpu_nhwc_weight_grad_is_fast.cache_clear()


@pytest.mark.parametrize("capability", ["AVX2", "AVX512"])
def test_upsample4_conv4_training_gradients_equal_autograd(cpu_capability, capability):
    """The training form keeps x only and re-upsamples strips in backward: same weight, bias and input gradients
    as autograd through the whole upsampled map, in float32 and under bf16 autocast, in either conv layout."""
    cpu_capability(capability)
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(6, 8, kernel_size=4, stride=4)
    x = torch.randn(2, 6, 37, 29, requires_grad=True)
    g = torch.randn(2, 8, 37, 29)
    for dtype, tol in ((None, 1e-4), (torch.bfloat16, 5e-2)):
        grads = []
        for fused in (True, False):
            conv.zero_grad()
            x.grad = None
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = (upsample4_conv4(x, conv, strip_rows=10) if fused else
                       conv(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=True)))
            assert out.dtype == (dtype or torch.float32)
            if fused:
                assert out.is_contiguous(memory_format=torch.channels_last) == (capability == "AVX512")
            out.backward(g.to(out.dtype))
            grads.append([conv.weight.grad.clone(), conv.bias.grad.clone(), x.grad.clone()])
        for got, expected in zip(*grads):
            torch.testing.assert_close(got, expected, atol=tol * expected.abs().max().item(), rtol=0)


def test_row_streams_match_whole_tensor_ops():
    torch.manual_seed(2)
    block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.SiLU())
    x = torch.randn(1, 4, 50, 9)
    with torch.no_grad():
        expected = block(block(x))
        source = RowStream(50, lambda a, b: x[:, :, a:b], band_rows=8)
        first = RowStream(50, local_rows(source, block, halo=1), band_rows=5)
        second = RowStream(50, local_rows(first, block, halo=1), band_rows=7)
        got = torch.cat([second.rows(a, a + 6) for a in range(0, 50, 6)], dim=2)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert first.start > 30 and first.band.shape[2] < 20  # rows the second stage no longer needs were freed
    with pytest.raises(RuntimeError, match="row 0 was requested after rows below"):
        first.rows(0, 4)

    small = torch.randn(2, 3, 11, 7)
    full = resize(small, (40, 30))
    torch.testing.assert_close(resize_rows(small, (40, 30), 13, 29), full[:, :, 13:29], atol=1e-5, rtol=0)
    lo, hi = source_rows(11, 40, 13, 29)
    band = small[:, :, lo:hi]
    torch.testing.assert_close(resize_rows(band, (40, 30), 13, 29, source_start=lo, source_height=11),
                               full[:, :, 13:29], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="outside the band"):
        resize_rows(band[:, :, 1:], (40, 30), 13, 29, source_start=lo + 1, source_height=11)


@pytest.mark.parametrize("h, w", [(256, 384), (384, 256)])
def test_banded_inference_tail_equals_the_plain_path(tiny, monkeypatch, h, w):
    """CPU inference streams the full-resolution path in row bands; small bands exercise every band boundary."""
    monkeypatch.setattr(SegmentationDecoder._full_resolution_in_bands, "__defaults__", (8, 24))
    image, depth = _inputs(1, h, w, seed=3)
    with torch.no_grad():
        lean = tiny(image, depth)[0]
    with torch.enable_grad():  # autograd on: the plain path (whole tensors)
        plain = tiny(image, depth)[0].detach()
    torch.testing.assert_close(lean, plain, atol=1e-5, rtol=1e-5)


def test_patch_grid_order_matches_official_split():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    patches = split_grid(x, 8)
    official = torch.cat([x[..., r * 2:(r + 1) * 2, c * 2:(c + 1) * 2] for r in range(8) for c in range(8)], dim=0)
    assert torch.equal(patches, official)
    assert torch.equal(merge_grid(patches, 8), x)


def test_bis_quirks():
    logits = torch.randn(1, 1, 8, 8) * 3
    # h // 8 == 1: a 1x1 pool is the identity, so there is no boundary at all.
    boundary, integrity = boundary_integrity_split(logits, "v2026")
    assert torch.count_nonzero(boundary) == 0
    torch.testing.assert_close(integrity, logits.sigmoid())
    # h // 8 even (v2026): thresholded; the zero-padded pool marks the frame of a flat confident map as boundary.
    flat = torch.full((1, 1, 32, 32), 6.0)
    boundary, _ = boundary_integrity_split(flat, "v2026")
    assert set(boundary.unique().tolist()) <= {0.0, 1.0}
    assert boundary[0, 0, 0].sum() > 0 and boundary[0, 0, 16, 16] == 0
    # v2025.03: continuous, doubled.
    boundary_v1, integrity_v1 = boundary_integrity_split(flat, "v2025.03")
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


@pytest.mark.parametrize("variant", ["v2026", "v2025.03"])
def test_wide_convs_train_in_the_plain_layout_on_cpus_without_avx512(cpu_capability, variant):
    """On CPUs without AVX-512, oneDNN's channels-last weight gradient is several times slower, so the decoder's
    wide full-resolution convs train in the plain layout there (channels-last elsewhere and at inference), with the
    same gradients."""
    torch.manual_seed(0)
    model = PDFNet(backbone="swin_tiny_test", emb_dim=16, variant=variant, drop_path=0.0).train()
    seg, dep = model.decoder, model.depth_decoder
    wide_convs = [seg.shallow[1][0], seg.refine_half[0][0], seg.refine_full[0][0], dep.refine_half[0],
                  dep.refine_full[0]]
    layouts: list[bool] = []
    for conv in wide_convs:
        conv.register_forward_pre_hook(
            lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    image, depth = _inputs(1, 128, 128)
    grads = {}
    for capability in ("AVX2", "AVX512"):
        cpu_capability(capability)
        layouts.clear()
        model.zero_grad()
        torch.manual_seed(5)  # same dropout masks
        seg_logits, depth_logits = model(image, depth, return_depth=True)
        sum(o.float().square().mean() for o in seg_logits + depth_logits).backward()
        assert layouts == [capability == "AVX512"] * len(wide_convs), capability
        grads[capability] = {n: p.grad.clone() for n, p in model.named_parameters()}
        with torch.no_grad():  # inference keeps channels-last whatever the CPU
            layouts.clear()
            model.eval()(image, depth)
            model.train()
        assert layouts and all(layouts), capability
    for name, g in grads["AVX2"].items():  # summation order differs between the layouts: compare gradient norms
        assert (g - grads["AVX512"][name]).norm() <= 1e-4 * grads["AVX512"][name].norm() + 1e-8, name
