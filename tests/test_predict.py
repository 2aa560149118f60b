"""scripts/predict.py on odd sizes, gray/RGBA inputs, output formats, missing depth, on-the-fly depth."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from pdfnet.data.io import read_gray_u8

_spec = importlib.util.spec_from_file_location("predict_script", REPO / "scripts" / "predict.py")
predict = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(predict)


@pytest.fixture()
def photos(tmp_path):
    folder, depth = tmp_path / "photos", tmp_path / "depth"
    folder.mkdir()
    depth.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 101, 3), dtype=np.uint8)).save(folder / "wide #1.jpg")
    Image.fromarray(rng.integers(0, 255, (97, 33), dtype=np.uint8), "L").save(folder / "tall gray.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    for name, (h, w) in (("wide #1", (45, 101)), ("tall gray", (97, 33)), ("rgba", (50, 50))):
        cv2.imwrite(str(depth / f"{name}.png"), rng.integers(0, 65535, (h, w), dtype=np.uint16))
    return folder, depth


@pytest.mark.parametrize("fmt, channels", [("mask", None), ("rgba", 4), ("overlay", 3)])
def test_outputs_keep_size_and_stem(tiny_checkpoint, photos, tmp_path, fmt, channels):
    folder, depth = photos
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--output", str(out),
                         "--depth_dir", str(depth), "--format", fmt, "--device", "cpu"]) == 0
    for name, (h, w) in (("wide #1", (45, 101)), ("tall gray", (97, 33)), ("rgba", (50, 50))):
        result = np.array(Image.open(out / f"{name}.png"))
        assert result.shape[:2] == (h, w)
        assert (result.ndim == 2) if channels is None else (result.shape[2] == channels)


def test_tta_and_single_file(tiny_checkpoint, photos, tmp_path):
    folder, depth = photos
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder / "rgba.png"), "--output", str(out),
                         "--depth_dir", str(depth), "--tta", "--device", "cpu"]) == 0
    assert read_gray_u8(out / "rgba.png").shape == (50, 50) and len(list(out.iterdir())) == 1


def test_missing_depth_fails_by_name_and_the_rest_is_written(tiny_checkpoint, photos, tmp_path, capsys):
    folder, depth = photos
    (depth / "rgba.png").unlink()
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--output", str(out),
                         "--depth_dir", str(depth), "--device", "cpu"]) == 1
    assert "rgba: no depth map for 'rgba'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["tall gray.png", "wide #1.png"]


def test_depth_computed_on_the_fly(tiny_checkpoint, tiny_depth_model, photos, tmp_path):
    folder, _ = photos
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder / "wide #1.jpg"), "--output",
                         str(out), "--depth_model", str(tiny_depth_model), "--device", "cpu"]) == 0
    assert read_gray_u8(out / "wide #1.png").shape == (45, 101)


def test_bad_input_paths(tiny_checkpoint, tmp_path, capsys):
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(tmp_path / "nope"), "--output",
                         str(tmp_path / "o"), "--depth_dir", str(tmp_path)]) == 2
    assert "neither an image nor a folder" in capsys.readouterr().err
