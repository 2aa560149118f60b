"""The inference library: batching, autocast, TTA symmetry and the tiled high-resolution mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdfnet.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from pdfnet.engine.inference import predict_logits, predict_probs
from pdfnet.engine.predictor import Predictor
from pdfnet.engine.tiling import count_tiles, interpolation_rows, predict_probs_tiled, tile_starts, tile_window
from pdfnet.models import PDFNet


class PointwiseModel(torch.nn.Module):
    """Logit = a pointwise function of the input pixel, so a tile's output is the full image's output cropped:
    any seam, misplaced tile or wrong weight normalisation shows up. Counts its forward passes."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))
        self.bias = bias
        self.calls = 0

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        return [self.scale * (image.mean(1, keepdim=True) - 0.5 * depth) + self.bias]


def _image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.random((h, w), dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_kwargs):
    torch.manual_seed(0)
    return PDFNet(**tiny_model_kwargs, depth_head=False).eval()


def test_tile_layout_covers_with_overlap():
    for length in (1024, 1025, 1500, 3000, 5108):
        starts = tile_starts(length, 1024, 256)
        assert starts[0] == 0 and starts[-1] + min(1024, length) == length
        assert all(b - a <= 1024 - 256 for a, b in zip(starts, starts[1:]))  # neighbours share >= 256 px
        weight = np.zeros(length)
        for s in starts:
            weight[s:s + min(1024, length)] += tile_window(s, min(1024, length), length, 256)
        assert weight.min() > 0.99  # the ramps of two neighbours sum to ~1; borders keep full weight
    assert count_tiles(3421, 5108, 1024, 256) == 5 * 7
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(3000, 1024, 1024)


def test_global_region_equals_full_resize():
    probs = torch.rand(64, 48)
    full = F.interpolate(probs[None, None], size=(300, 211), mode="bilinear", align_corners=False)[0, 0]
    ry, rx = interpolation_rows(64, 300, 17, 200, probs.device), interpolation_rows(48, 211, 5, 190, probs.device)
    region = ry @ probs @ rx.T  # how the tiled mode resizes one region of the global prediction
    assert torch.allclose(region, full[17:200, 5:190], atol=1e-5)


@pytest.mark.parametrize("h, w, batch", [(700, 530, 1), (300, 1000, 4), (200, 1000, 2)])
def test_tiles_blend_without_seams(h, w, batch):
    image, depth = _image(h, w)
    model = PointwiseModel()
    tiled = predict_probs_tiled(model, image, depth, size=256, overlap=64, batch_size=batch, skip_confidence=1.0)
    passes = model.calls
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - IMAGENET_MEAN[None]) / IMAGENET_STD[None]
    d = torch.from_numpy(depth)[None, None]
    if h < 256:  # an axis shorter than a tile is resized to the model size and back, as the plain path does
        x, d = (F.interpolate(t, size=(256, w), mode="bilinear", align_corners=False) for t in (x, d))
    expected = F.interpolate(model(x, d)[0].sigmoid(), size=(h, w), mode="bilinear", align_corners=False)
    assert np.abs(tiled - expected[0, 0].detach().numpy()).max() < 1e-5
    assert passes == 1 + -(-count_tiles(h, w, 256, 64) // batch)  # the global pass, then the tiles in batches


def test_uniform_tiles_are_skipped_and_blend_smoothly():
    image, depth = _image(600, 900)
    model = PointwiseModel(bias=-30.0)  # confidently background everywhere
    probs = predict_probs_tiled(model, image, depth, size=256, overlap=64, skip_confidence=0.98)
    assert model.calls == 1  # the global pass only
    plain = predict_probs(model, image, depth, size=256)
    assert np.abs(probs - plain).max() < 1e-6
    model = PointwiseModel(bias=-30.0)
    predict_probs_tiled(model, image, depth, size=256, overlap=64, skip_confidence=1.0)
    assert model.calls == 1 + count_tiles(600, 900, 256, 64)


@pytest.mark.parametrize("bias, batch", [(-30.0, 1), (0.0, 3)])  # every tile skipped; every tile run, in batches
def test_tile_progress_reports_every_tile_once(bias, batch):
    image, depth = _image(600, 900)
    seen = []
    predictor = Predictor(PointwiseModel(bias=bias), size=256, tile=True, tile_overlap=64, batch_size=batch,
                          tile_progress=lambda done, total: seen.append((done, total)))
    predictor([image], [depth])
    total = count_tiles(600, 900, 256, 64)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(a[0] < b[0] and a[1] == b[1] == total for a, b in zip(seen, seen[1:]))
    assert len(seen) == 1 + (total if bias else -(-total // batch))


def test_image_within_one_tile_equals_plain_path(tiny_model):
    for h, w in ((128, 128), (100, 77)):
        image, depth = _image(h, w)
        tiled = predict_probs_tiled(tiny_model, image, depth, size=128, overlap=32)
        assert np.array_equal(tiled, predict_probs(tiny_model, image, depth, size=128))


def test_tiled_real_model_is_batch_independent(tiny_model):
    image, depth = _image(300, 410)
    one = predict_probs_tiled(tiny_model, image, depth, size=128, overlap=32, batch_size=1, skip_confidence=1.0)
    many = predict_probs_tiled(tiny_model, image, depth, size=128, overlap=32, batch_size=5, skip_confidence=1.0)
    assert one.shape == (300, 410) and one.dtype == np.float32 and 0 <= one.min() and one.max() <= 1
    assert np.abs(one - many).max() < 1e-4


def test_batched_predictions_equal_one_by_one(tiny_model):
    pairs = [_image(h, w, seed) for seed, (h, w) in enumerate([(90, 140), (128, 128), (333, 71)])]
    images, depths = [p[0] for p in pairs], [p[1] for p in pairs]
    singles = Predictor(tiny_model, size=128, batch_size=1)(images, depths)
    batched = Predictor(tiny_model, size=128, batch_size=3)(images, depths)
    for one, many, image in zip(singles, batched, images):
        assert one.shape == image.shape[:2]
        assert np.abs(one - many).max() < 1e-4


def test_half_precision_is_close_to_float32(tiny_model):
    image, depth = _image(150, 200)
    full = predict_probs(tiny_model, image, depth, size=128)
    half = predict_probs(tiny_model, image, depth, size=128, half=True)
    assert half.dtype == np.float32 and np.abs(full - half).mean() < 0.02


def test_tta_is_flip_symmetric(tiny_model):
    """TTA averages over the flipped image too, so flipping the input flips the output (to float rounding)."""
    torch.manual_seed(1)
    image, depth = torch.randn(1, 3, 128, 128), torch.rand(1, 1, 128, 128)
    logits = predict_logits(tiny_model, image, depth, tta=True)
    flipped = predict_logits(tiny_model, image.flip(-1), depth.flip(-1), tta=True)
    assert torch.allclose(logits, flipped.flip(-1), atol=1e-4)
    plain = predict_logits(tiny_model, image, depth)
    assert not torch.allclose(logits, plain, atol=1e-3)  # TTA really changes the prediction
