"""Cut-outs: foreground colour estimation judged as a user would (no halo of the old background in hair-like soft
edges), the predict options that use it, and compositing onto a new background."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pdfnet.data.synthetic import hair_composite
from pdfnet.engine.cutout import _box_blur, cut_out, estimate_foreground, parse_background


def test_box_blur_is_the_mean_over_the_window_inside_the_image():
    x = torch.rand(2, 9, 12)
    for r in (1, 3, 20):
        expected = torch.empty_like(x)
        for i in range(9):
            for j in range(12):
                expected[:, i, j] = x[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean(dim=(1, 2))
        torch.testing.assert_close(_box_blur(x, r), expected, rtol=1e-5, atol=1e-6)


def test_estimated_foreground_halves_the_halo_in_hair_like_soft_edges():
    image, alpha, fg, _ = hair_composite()
    band = (alpha > 0.02) & (alpha < 0.98)
    assert band.sum() > 5000
    estimated = estimate_foreground(image, alpha)
    assert estimated.dtype == np.float32 and estimated.shape == image.shape
    assert estimated.min() >= 0 and estimated.max() <= 1
    naive_error = np.abs(image - fg)[band].mean()  # the photo's colours: the old background shows through
    error = np.abs(estimated - fg)[band].mean()
    assert error * 2 <= naive_error, (error, naive_error)
    solid = alpha == 1
    np.testing.assert_allclose(estimated[solid], image[solid], atol=1e-5)  # the object itself is left alone
    # The composite of the estimate over the true background stays (close to) the photo.
    recomposed = alpha[..., None] * estimated + (1 - alpha[..., None]) * hair_composite()[3]
    assert np.abs(recomposed - image)[band].mean() < np.abs(image - fg)[band].mean() / 2


def test_estimate_foreground_takes_tensors_and_checks_shapes():
    image, alpha, _, _ = hair_composite(64)
    from_numpy = estimate_foreground(image, alpha)
    from_torch = estimate_foreground(torch.from_numpy(image), torch.from_numpy(alpha))
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, atol=1e-6)
    with pytest.raises(ValueError, match=r"image \[H,W,3\] and alpha \[H,W\]"):
        estimate_foreground(image, alpha[:10])


def test_cut_out_rgba_and_composite():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[:, :15] = 255
    mask[:, 15:18] = 128
    plain = cut_out(image, mask, "none")
    assert plain.shape == (20, 30, 4) and np.array_equal(plain[..., :3], image) and np.array_equal(plain[..., 3], mask)
    fast = cut_out(image, mask)
    assert np.array_equal(fast[..., 3], mask) and np.abs(fast[:, :15, :3].astype(int) - image[:, :15]).max() <= 1
    white = cut_out(image, mask, "none", (255, 255, 255))
    assert white.shape == (20, 30, 3) and (white[:, 20:] == 255).all()
    assert np.abs(white[:, :15].astype(int) - image[:, :15]).max() <= 1
    assert parse_background("white") == (255, 255, 255) and parse_background("#ff0000") == (255, 0, 0)
    assert parse_background("0,128,255") == (0, 128, 255) and parse_background("photo.jpg") == "photo.jpg"
    with pytest.raises(ValueError, match="three integers 0-255"):
        parse_background("1,2,300")
    with pytest.raises(ValueError, match="foreground must be one of"):
        cut_out(image, mask, "magic")


def test_predict_writes_estimated_cut_outs_and_composites(tiny_checkpoint, tmp_path, capsys):
    from pdfnet.cli import predict

    (tmp_path / "in").mkdir()
    (tmp_path / "depth").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(tmp_path / "depth" / "a.png")
    Image.fromarray(np.full((10, 10, 3), (0, 255, 0), np.uint8)).save(tmp_path / "green.png")
    common = ["--ckpt", str(tiny_checkpoint), "--input", str(tmp_path / "in"), "--depth_dir", str(tmp_path / "depth"),
              "--device", "cpu", "--workers", "0", "--format", "rgba"]
    outputs = {}
    for name, extra in (("fast", []), ("none", ["--foreground", "none"]), ("white", ["--background", "white"]),
                        ("image", ["--background", str(tmp_path / "green.png")])):
        assert predict.main([*common, "--output", str(tmp_path / name), *extra]) == 0, capsys.readouterr().err
        outputs[name] = np.array(Image.open(tmp_path / name / "a.png"))
    photo = np.array(Image.open(tmp_path / "in" / "a.png"))
    assert outputs["fast"].shape == outputs["none"].shape == (40, 56, 4)
    assert np.array_equal(outputs["none"][..., :3], photo)
    assert np.array_equal(outputs["fast"][..., 3], outputs["none"][..., 3])
    alpha = outputs["none"][..., 3:].astype(np.float32) / 255
    expected = np.round((outputs["fast"][..., :3] / 255 * alpha + (1 - alpha)) * 255)
    assert outputs["white"].shape == (40, 56, 3) and np.abs(outputs["white"] - expected).max() <= 1
    assert outputs["image"].shape == (40, 56, 3)
    assert predict.main([*common[:-2], "--output", str(tmp_path / "x"), "--background", "white"]) == 2
    assert "use it with --format rgba" in capsys.readouterr().err
    assert predict.main([*common, "--output", str(tmp_path / "x"), "--background", "nowhere.jpg"]) == 2
    assert "--background 'nowhere.jpg': not a colour and not a readable image" in capsys.readouterr().err
