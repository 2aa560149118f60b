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


def test_overlays_and_composites_as_jpeg_or_webp(tiny_checkpoint, photos, tmp_path, capsys):
    folder, depth = photos
    common = ["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--depth_dir", str(depth), "--device", "cpu"]
    for file_type, extra in (("jpg", ["--format", "overlay"]), ("webp", ["--format", "rgba", "--background", "white"])):
        out = tmp_path / file_type
        assert predict.main([*common, "--output", str(out), "--file_type", file_type, *extra]) == 0
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{file_type}" for n in ("wide #1", "tall gray",
                                                                                             "rgba"))
        with Image.open(out / f"wide #1.{file_type}") as im:
            assert im.format == {"jpg": "JPEG", "webp": "WEBP"}[file_type] and im.size == (101, 45)
    for extra in (["--format", "mask"], ["--format", "rgba"]):  # transparency or exact values: PNG only
        assert predict.main([*common, "--output", str(tmp_path / "x"), "--file_type", "jpg", *extra]) == 2
        assert "--file_type jpg is for pictures without transparency" in capsys.readouterr().err


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


def test_batches_tiles_and_half_precision(tiny_checkpoint, photos, tmp_path):
    folder, depth = photos
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8)).save(folder / "large.png")
    cv2.imwrite(str(depth / "large.png"), rng.integers(0, 65535, (300, 410), dtype=np.uint16))
    common = ["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--depth_dir", str(depth), "--device", "cpu",
              "--workers", "0"]  # reader processes are tested elsewhere; here they would only cost start-up time
    results = {}
    for tag, extra in (("one", []), ("batch3", ["--batch_size", "3"]), ("tile", ["--tile", "--tile_overlap", "32"]),
                       ("tilebatch", ["--tile", "--tile_overlap", "32", "--batch_size", "4"]),
                       ("half", ["--half"])):
        assert predict.main(common + ["--output", str(tmp_path / tag)] + extra) == 0
        results[tag] = {p.stem: read_gray_u8(p).astype(int) for p in (tmp_path / tag).iterdir()}
    assert sorted(results["one"]) == ["large", "rgba", "tall gray", "wide #1"]
    for name, mask in results["one"].items():
        assert np.abs(results["batch3"][name] - mask).max() <= 1  # batch-independent (8-bit rounding)
        assert np.abs(results["half"][name] - mask).mean() < 5
        if name != "large":  # images within one 128-px tile take the plain path
            assert np.array_equal(results["tile"][name], mask)
    assert results["tile"]["large"].shape == (300, 410)
    assert not np.array_equal(results["tile"]["large"], results["one"]["large"])  # tiles really ran
    assert np.abs(results["tilebatch"]["large"] - results["tile"]["large"]).max() <= 1


def test_unreadable_image_among_good_ones(tiny_checkpoint, photos, tmp_path, capsys):
    folder, depth = photos
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--output", str(out),
                         "--depth_dir", str(depth), "--batch_size", "2", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "1 of 4 image(s) failed" in err and "broken" in err
    assert sorted(p.name for p in out.iterdir()) == ["rgba.png", "tall gray.png", "wide #1.png"]


def test_bad_batch_size_and_overlap(tiny_checkpoint, photos, tmp_path, capsys):
    folder, depth = photos
    common = ["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--output", str(tmp_path / "o"),
              "--depth_dir", str(depth), "--device", "cpu"]
    with pytest.raises(SystemExit) as info:
        predict.main(common + ["--batch_size", "0"])
    assert info.value.code == 2 and "argument --batch_size: must be at least 1, got 0" in capsys.readouterr().err
    assert predict.main(common + ["--tile", "--tile_overlap", "128"]) == 2
    assert "--tile_overlap must be in [1, 128) pixels, got 128" in capsys.readouterr().err


def test_a_bad_size_is_an_argument_error_before_any_image_is_read(tiny_checkpoint, photos, tmp_path, capsys):
    folder, depth = photos
    for flag, value, message in (("--size", "100", "argument --size: must be a multiple of 64 from 128"),
                                 ("--batch_size", "0", "argument --batch_size: must be at least 1")):
        with pytest.raises(SystemExit) as info:
            predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(folder), "--output", str(tmp_path / "o"),
                          "--depth_dir", str(depth), "--device", "cpu", flag, value])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
