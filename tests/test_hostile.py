"""Hostile input and faults: decoding limits, bombs in configs, untrusted weights, one bad image among good ones,
orphaned workers, interrupted and failed writes, and what every loading entry point does with a malicious pickle."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from pdfnet.cli import main
from pdfnet.data.io import (
    ImageReadError,
    atomic_write,
    is_truncated,
    read_rgb_u8,
    remove_stale_temp_files,
    write_png,
)


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width`` x ``height`` RGB pixels (its data is one empty row): what a
    decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4))
            + chunk(b"IEND", b""))


def _run(*args: str, capsys) -> tuple[int, str]:
    code = main([*args])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ decoding limits
def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30000, 30000))
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(100000, 100000))  # 10^10 pixels: past OpenCV's own limit too
    for path, size in ((bomb, "900,000,000 pixels"), (huge, "10,000,000,000 pixels")):
        start = time.perf_counter()
        with pytest.raises(ImageReadError, match=re.escape(f"{path}: {size} is over the limit of 100,000,000")):
            read_rgb_u8(path)
        assert time.perf_counter() - start < 5  # refused, not decoded
    strip = tmp_path / "strip.png"
    write_png(strip, np.zeros((1, 8000, 3), np.uint8))
    with pytest.raises(ImageReadError, match="1x8000|8000x1"):
        read_rgb_u8(strip)
    photo = tmp_path / "photo.png"
    write_png(photo, np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setenv("PDFNET_MAX_PIXELS", "9999")
    with pytest.raises(ImageReadError, match=r"100x100 is over the limit of 9,999 pixels \(raise it with --max_pixels"):
        read_rgb_u8(photo)
    monkeypatch.setenv("PDFNET_MAX_PIXELS", "10000")
    assert read_rgb_u8(photo).shape == (100, 100, 3)


def test_truncated_images_are_found_without_decoding_complete_ones(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    for ext in (".jpg", ".png", ".webp", ".bmp"):
        ok, buf = cv2.imencode(ext, image)
        whole, cut = tmp_path / f"whole{ext}", tmp_path / f"cut{ext}"
        whole.write_bytes(buf.tobytes())
        cut.write_bytes(buf.tobytes()[: len(buf) * 2 // 3])
        assert not is_truncated(whole), ext
        assert is_truncated(cut), ext


def test_predict_writes_every_good_image_and_reports_each_bad_one(tiny_checkpoint, tmp_path, capsys):
    photos, depth, out = tmp_path / "photos", tmp_path / "depth", tmp_path / "out"
    rng = np.random.default_rng(0)
    for name in ("a", "c"):
        write_png(photos / f"{name}.png", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        write_png(depth / f"{name}.png", rng.integers(0, 255, (96, 128), dtype=np.uint8))
    (photos / "b_bomb.png").write_bytes(png_claiming(30000, 30000))
    write_png(photos / "b_strip.png", np.zeros((1, 8000, 3), np.uint8))
    (photos / "b_header.png").write_bytes(png_claiming(100000, 100000))
    code, err = _run("predict", "--ckpt", str(tiny_checkpoint), "--input", str(photos), "--output", str(out),
                     "--depth_dir", str(depth), "--device", "cpu", "--workers", "0", "--batch_size", "4",
                     capsys=capsys)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "3 of 5 image(s) failed" in err and "Traceback" not in err
    for name in ("b_bomb", "b_strip", "b_header"):
        assert re.search(rf"^  {name}: .*{name}\.png", err, re.M), err


def test_one_image_failing_in_the_model_costs_only_itself():
    from pdfnet.cli.common import run_batch

    def model(items):
        if "huge" in items:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.80 GiB\nmore detail")
        return [item.upper() for item in items]

    assert run_batch(model, ["a", "huge", "c"], ["1", "2", "3"]) == [
        ("1", "A", None), ("2", None, "CUDA out of memory. Tried to allocate 25.80 GiB"), ("3", "C", None)]
    assert run_batch(model, ["a", "b"], ["1", "2"]) == [("1", "A", None), ("2", "B", None)]


# -------------------------------------------------------------------------------------- outputs checked before work
def test_unwritable_outputs_are_reported_before_any_work(tiny_checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    write_png(image, np.zeros((64, 64, 3), np.uint8))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    common = ["--ckpt", str(tiny_checkpoint), "--depth_dir", str(tmp_path), "--device", "cpu"]
    code, err = _run("predict", *common, "--input", str(image), "--output", str(blocker), capsys=capsys)
    assert code == 2 and f"--output: {blocker} exists and is not a folder" in err
    code, err = _run("predict", *common, "--input", str(image), "--output", str(blocker / "sub"), capsys=capsys)
    assert code == 2 and f"cannot write in {blocker / 'sub'}" in err
    code, err = _run("eval", "--ckpt", str(tiny_checkpoint), "--split", "DIS-TE1", "--json", str(blocker / "m.json"),
                     capsys=capsys)
    assert code == 2 and f"--json: {blocker} exists and is not a folder" in err
    write_png(tmp_path / "DIS-TE1" / "im" / "a.png", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "DIS-TE1" / "a_file").write_text("x")
    code, err = _run("depth", "--data_root", str(tmp_path), "--splits", "DIS-TE1", "--out_name", "a_file/x",
                     capsys=capsys)
    assert code == 2 and "cannot write in" in err


def test_argument_ranges_are_exit_2_errors(tiny_checkpoint, capsys):
    for argv in (["demo", "--ckpt", str(tiny_checkpoint), "--port", "99999"],
                 ["export", "--ckpt", str(tiny_checkpoint), "--out", "x.onnx", "--size", "0"],
                 ["predict", "--ckpt", "x", "--input", "x", "--output", "y", "--depth_dir", "d", "--max_pixels", "0"]):
        code, err = _run(*argv, capsys=capsys)
        assert code == 2 and re.search(r"not a port number|must be a multiple of 64|must be at least 1", err), err


def test_a_failed_init_from_leaves_no_run_folder(synthetic_root, tmp_path):
    from test_train import tiny_config

    from pdfnet.engine.checkpoint import CheckpointError
    from pdfnet.engine.trainer import Trainer

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    cfg = tiny_config(synthetic_root, tmp_path / "run", f"train.init_from={broken}", "data.val_split=")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        Trainer(cfg, show_progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------- writes
def test_stale_temp_files_of_interrupted_writes_are_removed(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh, other = out / ".a.png.k3j4h5g6.tmp", out / ".b.png.abcdefgh.tmp", out / ".notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    image = tmp_path / "a.png"
    write_png(image, np.zeros((64, 64, 3), np.uint8))
    write_png(tmp_path / "depth" / "a.png", np.zeros((64, 64), np.uint8))
    assert main(["predict", "--ckpt", str(tiny_checkpoint), "--input", str(image), "--output", str(out),
                 "--depth_dir", str(tmp_path / "depth"), "--device", "cpu", "--workers", "0"]) == 0
    assert not stale.exists() and fresh.exists() and other.exists()  # a write in progress, and not ours
    assert remove_stale_temp_files(tmp_path / "missing") == 0


def test_a_full_disk_is_named_and_nothing_is_left_behind(tmp_path):
    """RLIMIT_FSIZE makes writes past 1 MiB fail (EFBIG) as a full disk (ENOSPC) would, in a child process."""
    code = (
        "import resource, signal, torch\n"
        "from pdfnet.engine.checkpoint import atomic_save\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        f"atomic_save({{'model': {{'w': torch.zeros(2**20)}}}}, {str(tmp_path / 'last.pth')!r})\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("OSError: ") and f"could not write {tmp_path / 'last.pth'}: File too large" in last, \
        result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_other_errors_as_they_are(tmp_path):
    def fail(f):
        f.write(b"abc")
        raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        atomic_write(tmp_path / "x.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_hub_files_get_the_usual_permissions(tmp_path, tiny_checkpoint):
    from pdfnet.engine.hub import save_pretrained
    from pdfnet.engine.inference import load_model

    model, cfg = load_model(tiny_checkpoint, "cpu")
    folder = save_pretrained(model, cfg, tmp_path / "hub")
    expected = 0o666 & ~_umask()
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "model.safetensors": expected, "config.json": expected, "README.md": expected}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------- loaded weights
def test_non_finite_weights_are_refused_and_other_precisions_cast(tiny_checkpoint, tmp_path, capsys):
    from pdfnet.engine.checkpoint import CheckpointError
    from pdfnet.engine.inference import load_model, predict_probs

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.numel() > 4)
    nan = dict(ckpt, model=dict(ckpt["model"]))
    nan["model"][key] = torch.full_like(ckpt["model"][key], float("nan"))
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"tensor {key!r} holds")):
        load_model(tmp_path / "nan.pth", "cpu")
    image = tmp_path / "a.png"
    write_png(image, np.zeros((64, 64, 3), np.uint8))
    code, err = _run("predict", "--ckpt", str(tmp_path / "nan.pth"), "--input", str(image), "--output",
                     str(tmp_path / "o"), "--depth_dir", str(tmp_path), "--device", "cpu", capsys=capsys)
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err

    double = dict(ckpt, model={k: v.double() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    torch.save(double, tmp_path / "double.pth")
    with pytest.warns(UserWarning, match="cast to float32"):
        model64, _ = load_model(tmp_path / "double.pth", "cpu")
    model32, _ = load_model(tiny_checkpoint, "cpu")
    assert all(p.dtype == torch.float32 for p in model64.parameters())
    rgb, depth = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.float32)
    np.testing.assert_array_equal(predict_probs(model64, rgb, depth, size=128), predict_probs(model32, rgb, depth,
                                                                                               size=128))


# ------------------------------------------------------------------------------------------------- config bombs
def test_config_bombs_give_a_short_message(tmp_path, capsys):
    lines = ["model:", '  variant: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"  fusion{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    code, err = _run("train", "--config", str(bomb), capsys=capsys)
    assert code == 2 and "config key 'model.variant'" in err and len(err) < 600, err[:1000]

    nested = ["x"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9^9 strings when expanded, 1.5 KB on disk (shared references)
    torch.save({"config": {"model": {"variant": nested}}, "model": {}}, tmp_path / "bomb.pth")
    image = tmp_path / "a.png"
    write_png(image, np.zeros((64, 64, 3), np.uint8))
    code, err = _run("predict", "--ckpt", str(tmp_path / "bomb.pth"), "--input", str(image), "--output",
                     str(tmp_path / "o"), "--depth_dir", str(tmp_path), capsys=capsys)
    assert code == 2 and "invalid config" in err and len(err) < 600, err[:1000]


# ------------------------------------------------------------------------------------------------------ processes
WORKER_SCRIPT = """
import os, sys, time
import numpy as np
from torch.utils.data import DataLoader
from pdfnet.engine.validation import collate_as_is
from pdfnet.workers import loader_worker_init

class Big:
    def __len__(self): return 1000
    def __getitem__(self, i): return os.getpid(), np.zeros(2**22, np.uint8)  # 4 MiB: fills the pipe at once

# numpy arrays as they are (as predict passes images) go through the pipe, not shared memory: a worker whose
# parent is gone is then blocked writing, and torch's own watchdog never runs.
loader = DataLoader(Big(), batch_size=None, num_workers=2, prefetch_factor=8, collate_fn=collate_as_is,
                    worker_init_fn=loader_worker_init)
pids, it = set(), iter(loader)
while len(pids) < 2:
    pids.add(next(it)[0])
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_loader_workers_exit_when_their_parent_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "DataLoader workers outlived their parent"


# ------------------------------------------------------------------------------------------------------ the demo
def test_demo_keeps_a_bounded_set_of_cut_outs_named_after_the_upload(tiny_checkpoint, tmp_path):
    from pdfnet.cli.demo import shown_name
    from pdfnet.engine.demo import Segmenter
    from pdfnet.engine.inference import load_model

    model, cfg = load_model(tiny_checkpoint, "cpu")
    segmenter = Segmenter(model, cfg, depth_fn=lambda images: [np.zeros(i.shape[:2], np.float32) for i in images],
                          keep=2)
    photo = tmp_path / "my photo.png"
    write_png(photo, np.zeros((64, 48, 3), np.uint8))
    paths = [segmenter(str(photo))[3] for _ in range(3)]
    assert [os.path.basename(p) for p in paths] == ["my photo_cutout.png"] * 3
    assert [os.path.exists(p) for p in paths] == [False, True, True]
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(13000, 13000))
    with pytest.raises(ImageReadError, match="over the limit"):
        segmenter(str(bomb))
    segmenter.close()
    assert not segmenter.out_dir.exists()
    assert shown_name(str(tiny_checkpoint)) == "tiny.pth" and shown_name("owner/model") == "owner/model"


# ------------------------------------------------------------------------------------------- malicious pickles
class _Payload:
    """Unpickling this runs a command: what a hostile file would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_no_loading_entry_point_runs_a_malicious_pickle(tmp_path, synthetic_root, tiny_depth_model, tiny_checkpoint,
                                                        capsys):
    import shutil

    from test_train import _cli_opts

    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "x": _Payload(marker)}, hostile)
    image = tmp_path / "a.png"
    write_png(image, np.zeros((64, 64, 3), np.uint8))
    depth_model = tmp_path / "depth_model"
    shutil.copytree(tiny_depth_model, depth_model)
    (depth_model / "model.safetensors").unlink()
    torch.save({"x": _Payload(marker)}, depth_model / "pytorch_model.bin")
    runs = {
        "predict": ["predict", "--ckpt", str(hostile), "--input", str(image), "--output", str(tmp_path / "o"),
                    "--depth_dir", str(tmp_path)],
        "eval": ["eval", "--ckpt", str(hostile), "--split", "DIS-VD", "--data_root", str(synthetic_root)],
        "export": ["export", "--ckpt", str(hostile), "--out", str(tmp_path / "m.onnx")],
        "convert": ["convert", str(hostile), str(tmp_path / "c.pth")],
        "init_from": ["train", *_cli_opts(synthetic_root, tmp_path / "r1", f"train.init_from={hostile}")],
        "resume": ["train", *_cli_opts(synthetic_root, tmp_path / "r2"), "--resume", str(hostile)],
        "pretrained": ["train", *_cli_opts(synthetic_root, tmp_path / "r3", f"model.pretrained={hostile}")],
        "depth model": ["predict", "--ckpt", str(tiny_checkpoint), "--input", str(image), "--output",
                        str(tmp_path / "o"), "--depth_model", str(depth_model)],
    }
    for what, argv in runs.items():
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        err = capsys.readouterr().err
        assert code != 0, what
        assert "Traceback" not in err, (what, err[-2000:])
        assert not marker.exists(), what
    from pdfnet.depth import DepthEstimator

    with pytest.raises(RuntimeError, match="a model.safetensors and its config.json are needed") as info:
        DepthEstimator(str(depth_model), device="cpu")
    assert not marker.exists() and "weights_only=False" not in str(info.value)


# ------------------------------------------------------------------------------------- truncated files, up front
def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_image_stops_training_and_eval_before_any_work(tmp_path, tiny_checkpoint, capsys):
    from test_train import tiny_config

    from pdfnet.data.datasets import DatasetError
    from pdfnet.data.synthetic import write_split
    from pdfnet.engine.trainer import Trainer

    root = tmp_path / "DIS5K"
    write_split(root, "DIS-TR", 4, 128, seed=0)
    write_split(root, "DIS-TE1", 2, 128, seed=0, first_index=50)
    bad_train = sorted((root / "DIS-TR" / "im").iterdir())[1]
    bad_test = sorted((root / "DIS-TE1" / "im").iterdir())[0]
    _truncate(bad_train)
    _truncate(bad_test)
    with pytest.raises(DatasetError, match=re.escape(f"truncated image {bad_train}")):
        Trainer(tiny_config(root, tmp_path / "run", "data.val_split="), show_progress=False)
    assert not (tmp_path / "run").exists()
    code, err = _run("eval", "--ckpt", str(tiny_checkpoint), "--split", "DIS-TE1", "--data_root", str(root),
                     "--device", "cpu", "--no_hce", "--save_dir", str(tmp_path / "maps"), capsys=capsys)
    assert code == 2 and f"truncated image {bad_test}" in err and "Traceback" not in err
    assert not (tmp_path / "maps").exists()
