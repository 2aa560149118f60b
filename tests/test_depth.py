"""Depth Anything V2 wrapper and prepare_depth.py, on a tiny random model the test builds and saves itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import REPO
from pdfnet.data.io import write_png
from pdfnet.depth.anything import DepthEstimator, lower_bound_size
from pdfnet.hub_files import HubFilesError

transformers = pytest.importorskip("transformers")


def test_resize_rule_is_depth_anythings_lower_bound():
    assert lower_bound_size(300, 400) == (518, 686)
    assert lower_bound_size(518, 518) == (518, 518)
    h, w = lower_bound_size(1200, 5500)
    assert h == 518 and w % 14 == 0 and w >= 518


def test_estimator_returns_normalised_maps_at_image_size(tiny_depth_model):
    est = DepthEstimator(str(tiny_depth_model), device="cpu", input_size=56)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8),
              rng.integers(0, 255, (70, 30, 3), dtype=np.uint8)]
    maps = est(images)
    assert [m.shape for m in maps] == [(40, 60), (40, 60), (70, 30)]
    for m in maps:
        assert m.dtype == np.float32 and m.min() == 0 and m.max() == pytest.approx(1)
    assert np.allclose(est(images[:1])[0], maps[0], atol=1e-5)  # batching does not change a map


def test_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubFilesError, match=r"folder .*empty has no config.json \(--depth_model takes"):
        DepthEstimator(str(tmp_path / "empty"), device="cpu")


def test_offline_missing_model_fails_fast_naming_model_flag_and_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # nothing cached
    start = time.perf_counter()
    with pytest.raises(HubFilesError) as info:
        DepthEstimator("small", device="cpu", flag="--model_size")
    message = str(info.value)
    assert time.perf_counter() - start < 5
    assert "depth-anything/Depth-Anything-V2-Small-hf" in message and "Large" not in message
    assert "--model_size" in message and "hf download depth-anything/Depth-Anything-V2-Small-hf" in message
    assert "huggingface-cli" not in message and ".." not in message


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "scripts/prepare_depth.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_prepare_depth_end_to_end_resume_overwrite_and_corrupt_file(tiny_depth_model, tmp_path, capsys):
    from pdfnet.cli.depth import main

    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for name in ("a #1", "b", "c"):
        write_png(root / "DIS-VD" / "im" / f"{name}.png", rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    (root / "DIS-VD" / "im" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["--data_root", str(root), "--model", str(tiny_depth_model), "--input_size", "56", "--device", "cpu",
            "--batch_size", "2"]
    assert main(args) == 1 and "broken.jpg" in capsys.readouterr().err
    out = root / "DIS-VD" / "depth"
    assert sorted(p.name for p in out.iterdir()) == ["a #1.png", "b.png", "c.png"]
    depth = cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (30, 50) and depth.min() == 0 and depth.max() == 65535
    stamp = (out / "b.png").stat().st_mtime_ns
    (root / "DIS-VD" / "im" / "broken.jpg").unlink()
    assert main(args) == 0 and "3 maps already exist, 0 to compute" in capsys.readouterr().out
    assert (out / "b.png").stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite", "--out_name", "depth_small"]) == 0
    assert (root / "DIS-VD" / "depth_small" / "c.png").is_file()
    # the script form is the same command
    assert _run(*args).returncode == 0


def test_prepare_depth_bad_arguments(tmp_path):
    assert _run("--data_root", str(tmp_path / "none")).returncode == 2
    (tmp_path / "DIS-TR").mkdir()
    proc = _run("--data_root", str(tmp_path))
    assert proc.returncode == 2 and "no image folder" in proc.stderr
