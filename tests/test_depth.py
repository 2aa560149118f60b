"""Depth Anything V2 wrapper and prepare_depth.py, on a tiny random model the test builds and saves itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

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


# ------------------------------------------------------------------------ every generator architecture, tiny
def _dinov2():
    import transformers as T

    return T.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          image_size=518, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                          reshape_hidden_states=False)


def _tiny(kind: str):
    """(model, image processor or None) of a tiny random model of each architecture the docs list."""
    import transformers as T

    head = dict(fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 32], reassemble_hidden_size=32)
    if kind in ("depth_anything_v1", "depth_anything_metric"):
        extra = {"depth_estimation_type": "metric", "max_depth": 20} if kind.endswith("metric") else {}
        return T.DepthAnythingForDepthEstimation(T.DepthAnythingConfig(backbone_config=_dinov2(), head_hidden_size=8,
                                                                         **head, **extra)), None
    if kind == "dpt":
        cfg = T.DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          image_size=64, patch_size=16, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                          backbone_out_indices=[0, 1, 2, 3])
        return T.DPTForDepthEstimation(cfg), T.DPTImageProcessor(size={"height": 64, "width": 64})
    if kind == "zoedepth":
        beit = T.BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=64, patch_size=16, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False, use_relative_position_bias=True)
        cfg = T.ZoeDepthConfig(backbone_config=beit, bottleneck_features=16, num_attractors=[4, 4, 2, 2],
                               bin_embedding_dim=16, num_relative_features=8, **head)
        return T.ZoeDepthForDepthEstimation(cfg), T.ZoeDepthImageProcessor(size={"height": 64, "width": 64})
    if kind == "depth_pro":
        sub = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, image_size=64, patch_size=16)
        cfg = T.DepthProConfig(fusion_hidden_size=16, patch_size=64, intermediate_hook_ids=[1, 0],
                               intermediate_feature_dims=[16, 16], scaled_images_ratios=[0.5, 1.0],
                               scaled_images_overlap_ratios=[0.0, 0.25], scaled_images_feature_dims=[16, 16],
                               image_model_config=sub, patch_model_config=sub, fov_model_config=sub)
        return T.DepthProForDepthEstimation(cfg), T.DepthProImageProcessor(size={"height": 128, "width": 128})
    if kind == "prompt_depth_anything":
        cfg = T.PromptDepthAnythingConfig(backbone_config=_dinov2(), head_hidden_size=8,
                                          depth_estimation_type="metric", **head)
        return T.PromptDepthAnythingForDepthEstimation(cfg), T.PromptDepthAnythingImageProcessor(
            size={"height": 70, "width": 70}, keep_aspect_ratio=True, ensure_multiple_of=14)
    raise ValueError(kind)


@pytest.mark.parametrize("kind, output", [("depth_anything_v1", "relative"), ("depth_anything_metric", "metric"),
                                          ("dpt", "relative"), ("zoedepth", "metric"), ("depth_pro", "metric"),
                                          ("prompt_depth_anything", "metric")])
def test_every_listed_architecture_gives_a_map_at_the_images_size(kind, output, tmp_path):
    torch.manual_seed(0)
    model, processor = _tiny(kind)
    model.save_pretrained(tmp_path)
    if processor is not None:
        processor.save_pretrained(tmp_path)
    estimator = DepthEstimator(str(tmp_path), device="cpu", half=False)
    assert estimator.output == output
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    (depth,) = estimator([image])
    assert depth.shape == (90, 130) and depth.dtype == np.float32
    assert depth.min() == 0.0 and depth.max() == 1.0


def test_metric_depth_is_inverted_so_that_near_is_bright():
    from pdfnet.depth.anything import near_is_one

    metres = torch.linspace(1.0, 10.0, 50)[None].repeat(4, 1)  # 1 m on the left, 10 m on the right
    relative = near_is_one(metres, "metric")
    assert relative[0, 0] == 1.0 and relative[0, -1] == 0.0 and np.all(np.diff(relative[0]) < 0)
    disparity = near_is_one(1.0 / metres, "relative")
    np.testing.assert_allclose(relative, disparity, atol=1e-6)


def test_generator_names_and_the_papers_presets_resolve_to_hub_ids():
    from pdfnet.depth.ids import GENERATORS, resolve_generator

    assert resolve_generator("L") == resolve_generator("PDFNet-L") == resolve_generator("large") == \
        "depth-anything/Depth-Anything-V2-Large-hf"
    assert resolve_generator("S") == GENERATORS["small"].hub_id and resolve_generator("/my/folder") == "/my/folder"
    assert {g.paper for g in GENERATORS.values()} >= {"PDFNet-S", "PDFNet-B", "PDFNet-L"}
