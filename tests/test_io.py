"""Robust map reading (8/16-bit, colour, alpha, palette, names with '#' and spaces) and atomic writes."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from pdfnet.data.datasets import DatasetError, discover_split
from pdfnet.data.io import (
    ImageReadError,
    list_images,
    probs_to_u8,
    read_depth,
    read_gray_u8,
    read_rgb_u8,
    write_png,
)


def test_gray_reading_handles_formats(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    assert np.array_equal(read_gray_u8(tmp_path / "g16.png"), gray)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba #1.png")
    assert np.array_equal(read_gray_u8(tmp_path / "rgba #1.png"), gray)
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "pal.png")
    assert read_gray_u8(tmp_path / "pal.png").shape == (16, 16)


def test_depth_scaling_and_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "d16.png"), np.full((4, 5), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "d8.png"), np.full((4, 5), 51, np.uint8))
    assert read_depth(tmp_path / "d16.png").max() == 1.0
    assert read_depth(tmp_path / "d8.png")[0, 0] == pytest.approx(0.2)
    write_png(tmp_path / "c.png", np.dstack([np.full((3, 3), v, np.uint8) for v in (10, 20, 30)]))
    assert read_rgb_u8(tmp_path / "c.png")[0, 0].tolist() == [10, 20, 30]


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_gray_u8(tmp_path / "bad.png")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_rgb_u8(tmp_path / "missing.png")


def test_probability_quantisation_and_atomic_write(tmp_path):
    assert probs_to_u8(np.array([0.0, 0.5, 1.0, 1.2, -0.1])).tolist() == [0, 128, 255, 255, 0]
    write_png(tmp_path / "sub" / "m.png", np.zeros((2, 2), np.uint8))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.png"]  # no temp file left behind


def test_listing_by_stem(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert list(list_images(tmp_path)) == ["a"]
    write_png(tmp_path / "a.jpg", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="two files named 'a'"):
        list_images(tmp_path)


def test_split_discovery_reports_every_problem(tmp_path):
    for name in ("x", "y"):
        write_png(tmp_path / "DIS-VD" / "im" / f"{name}.png", np.zeros((2, 2), np.uint8))
    write_png(tmp_path / "DIS-VD" / "gt" / "x.png", np.zeros((2, 2), np.uint8))
    write_png(tmp_path / "DIS-VD" / "depth" / "y.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetError) as err:
        discover_split(tmp_path, "DIS-VD")
    assert "no mask file for image 'y'" in str(err.value) and "no depth file for image 'x'" in str(err.value)
    with pytest.raises(DatasetError, match="split folder not found"):
        discover_split(tmp_path, "DIS-TE9")
    samples = discover_split(tmp_path, "DIS-VD", need_masks=False, need_depth=False)
    assert [s.name for s in samples] == ["x", "y"]


def test_hostile_empty_and_foreign_checkpoints_give_one_line_and_run_nothing(tmp_path, capsys):
    import torch
    from test_hostile import _Payload

    from pdfnet.cli import main
    from pdfnet.engine.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    torch.save({"model": {}, "x": _Payload(marker)}, hostile)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(b"not a checkpoint at all")
    for path, message in ((hostile, "loading those could run code from the file, so it is not loaded"),
                          (empty, "is empty (0 bytes)"), (foreign, "not a PyTorch checkpoint")):
        with pytest.raises(CheckpointError, match=re.escape(message)) as info:
            load_checkpoint(path)
        assert "weights_only=False" not in str(info.value) and "likely succeed" not in str(info.value)
        image = tmp_path / "a.png"
        write_png(image, np.zeros((8, 8, 3), np.uint8))
        assert main(["predict", "--ckpt", str(path), "--input", str(image), "--output", str(tmp_path / "o"),
                     "--depth_dir", str(tmp_path), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not marker.exists()
