"""The web demo, used as a user would: started on 127.0.0.1 with the tiny model and a tiny Depth Anything, driven
through gradio_client (upload -> mask of the image's size) and through the page in headless Chromium."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from conftest import DIS_SAMPLES, REPO
from pdfnet.data.io import read_gray_u8, write_png

gradio = pytest.importorskip("gradio", reason="the demo needs the [demo] extra (gradio)")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_spec = importlib.util.spec_from_file_location("demo_screenshot", REPO / "scripts" / "demo_screenshot.py")
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory, tiny_depth_model):
    """(url, segmenter, example image) of a demo served in this process; closed after the module."""
    import torch

    from pdfnet.build import build_model
    from pdfnet.cli.demo import build, parse_args
    from pdfnet.config import Config
    from pdfnet.engine.checkpoint import atomic_save, make_checkpoint

    folder = tmp_path_factory.mktemp("demo")
    cfg = Config()
    cfg.model.backbone, cfg.model.emb_dim, cfg.model.depth_head = "swin_tiny_test", 16, False
    cfg.data.size = 128
    torch.manual_seed(0)
    atomic_save(make_checkpoint(build_model(cfg.model), cfg), folder / "tiny.pth")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)  # not square, not the model size
    write_png(folder / "photo.png", image)
    demo, segmenter = build(parse_args(["--ckpt", str(folder / "tiny.pth"), "--depth_model", str(tiny_depth_model),
                                        "--device", "cpu", "--examples", str(DIS_SAMPLES)]))
    assert demo is not None
    port = browser.free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", segmenter, folder / "photo.png"
    finally:
        demo.close()


def test_gradio_client_upload_returns_a_mask_of_the_images_size(running_demo):
    from gradio_client import Client, handle_file

    url, _, photo = running_demo
    client = Client(url, verbose=False)
    mask, cutout, depth, cutout_file = client.predict(handle_file(str(photo)), None, False, False,
                                                      api_name="/segment")
    assert read_gray_u8(mask).shape == (90, 150)
    assert read_gray_u8(depth).shape == (90, 150)
    import cv2

    rgba = cv2.imread(str(cutout_file), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (90, 150, 4)  # downloadable cut-out: the image with the mask as alpha
    assert np.array_equal(rgba[..., 3], read_gray_u8(mask))
    # the TTA and tiling switches reach the predictor (tiny model at 128: tiling takes the plain path)
    mask_tta, *_ = client.predict(handle_file(str(photo)), None, True, True, api_name="/segment")
    assert read_gray_u8(mask_tta).shape == (90, 150)
    # an uploaded depth map replaces Depth Anything's (resized to the image when it is not its size)
    write_png(photo.parent / "flat_depth.png", np.full((45, 75), 128, np.uint8))
    _, _, shown_depth, _ = client.predict(handle_file(str(photo)), handle_file(str(photo.parent / "flat_depth.png")),
                                          False, False, api_name="/segment")
    assert np.all(read_gray_u8(shown_depth) == 128) and read_gray_u8(shown_depth).shape == (90, 150)
    ramp = (np.arange(90 * 150, dtype=np.uint32).reshape(90, 150) * 4).astype(np.uint16)  # 16-bit values kept
    write_png(photo.parent / "ramp_depth.png", ramp)
    _, _, shown_depth, _ = client.predict(handle_file(str(photo)), handle_file(str(photo.parent / "ramp_depth.png")),
                                          False, False, api_name="/segment")
    expected = np.clip(np.rint(ramp / 65535.0 * 255), 0, 255).astype(np.uint8)
    assert np.abs(read_gray_u8(shown_depth).astype(int) - expected).max() <= 1


def test_segmenter_matches_predict_on_the_same_inputs(running_demo, tmp_path):
    """The page's answer is pdfnet predict's answer (same Predictor, same depth)."""
    from pdfnet.cli import main
    from pdfnet.data.io import read_rgb_u8

    _, segmenter, photo = running_demo
    image = read_rgb_u8(photo)
    mask, _, depth_u8, _ = segmenter(image, None, False, False)
    write_png(tmp_path / "depth" / "photo.png", (segmenter.depth_fn([image])[0] * 65535).round().astype(np.uint16))
    checkpoint = photo.parent / "tiny.pth"
    assert main(["predict", "--ckpt", str(checkpoint), "--input", str(photo), "--output", str(tmp_path / "out"),
                 "--depth_dir", str(tmp_path / "depth"), "--workers", "0", "--device", "cpu"]) == 0
    predicted = read_gray_u8(tmp_path / "out" / "photo.png")
    assert np.abs(predicted.astype(int) - mask.astype(int)).max() <= 1  # 16-bit depth file vs float depth


def test_examples_come_from_the_shared_samples_when_present(running_demo):
    from pdfnet.engine.demo import example_images

    examples = example_images(DIS_SAMPLES)
    if not DIS_SAMPLES.is_dir():
        assert examples == []
        pytest.skip(f"{DIS_SAMPLES} not available")
    assert 0 < len(examples) <= 6 and all(p.lower().endswith((".jpg", ".png")) for p in examples)


def test_the_page_in_headless_chromium(running_demo, tmp_path):
    if browser.find_browser() is None:
        pytest.skip("no Chromium + chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    pytest.importorskip("selenium", reason="pip install selenium (dev extra)")
    url, _, photo = running_demo
    srcs = browser.drive_in_browser(url, photo, screenshot=tmp_path / "page.png", timeout=120)
    assert set(srcs) == {"mask", "cutout", "depth"}
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_without_a_depth_model_the_demo_starts_and_asks_for_depth_maps(tiny_checkpoint, tmp_path):
    from pdfnet.cli.demo import build, parse_args

    demo, segmenter = build(parse_args(["--ckpt", str(tiny_checkpoint), "--depth_model", "none", "--device", "cpu",
                                        "--examples", ""]))
    assert demo is not None and segmenter.depth_fn is None
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="upload the image's depth map too"):
        segmenter(image)
    write_png(tmp_path / "depth.png", np.full((40, 60), 128, np.uint8))
    mask, cutout, depth, _ = segmenter(image, str(tmp_path / "depth.png"))
    assert mask.shape == (40, 60) and cutout.shape == (40, 60, 4)


def test_no_examples_means_none_not_the_current_folder(tmp_path, monkeypatch):
    from pdfnet.cli.demo import parse_args
    from pdfnet.engine.demo import example_images

    write_png(tmp_path / "private.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    assert example_images(parse_args(["--ckpt", "x.pth", "--examples", ""]).examples) == []
