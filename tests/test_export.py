"""scripts/export_onnx.py on the tiny model: fixed and dynamic graphs, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import REPO

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

_spec = importlib.util.spec_from_file_location("export_script", REPO / "scripts" / "export_onnx.py")
export_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_script)


def _dims(model, index):
    value = model.graph.input[index] if index >= 0 else model.graph.output[0]
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_dynamic_export_matches_pytorch_on_two_sizes(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert export_script.main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--dynamic",
                               "--verify_batch", "2"]) == 0
    report = capsys.readouterr().out
    diffs = [float(line.rsplit(" ", 1)[1]) for line in report.splitlines() if "max |probability difference|" in line]
    assert len(diffs) == 2 and max(diffs) <= 1e-3
    assert "[2,3,128,128]" in report and "[1,3,64,256]" in report  # batch 2, then another height and width
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["image", "depth"]
    assert model.opset_import[0].version >= 17
    image, depth = _dims(model, 0), _dims(model, 1)
    assert image[1] == 3 and depth[1] == 1
    assert all(isinstance(d, str) for d in image[:1] + image[2:])  # symbolic batch, height, width
    assert image[2:] == depth[2:] == _dims(model, -1)[2:]

    # The verification can fail: a model with other weights does not match this file.
    from pdfnet.engine.export import verify_onnx
    from pdfnet.engine.inference import load_model

    other, _ = load_model(tiny_checkpoint, "cpu")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert verify_onnx(other, out, 128, [(1, 128, 192)])[0][1] > 1e-3

    # The onnxruntime example of the docs, as written, in a folder with its three files; its session prints nothing.
    run_docs_example(out, tiny_checkpoint, tmp_path / "example")


def run_docs_example(onnx_file, checkpoint, folder) -> None:
    import os
    import re
    import shutil
    import subprocess
    import sys

    import numpy as np

    from pdfnet.data.io import read_gray_u8, write_png
    from pdfnet.engine.inference import load_model, predict_probs

    text = (REPO / "docs" / "inference-and-export.md").read_text(encoding="utf-8")
    code = re.search(r"### Run it with onnxruntime.*?```python\n(.*?)```", text, re.S).group(1)
    folder.mkdir()
    shutil.copy(onnx_file, folder / "pdfnet.onnx")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)
    depth = (rng.random((90, 150)) * 65535).astype(np.uint16)
    write_png(folder / "photo_depth.png", depth)
    from PIL import Image

    Image.fromarray(photo).save(folder / "photo.jpg", quality=100)
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip() == "", result.stderr[-2000:]  # no onnxruntime warnings
    model, _ = load_model(checkpoint, "cpu")
    rgb = np.asarray(Image.open(folder / "photo.jpg").convert("RGB"))
    expected = np.rint(predict_probs(model, rgb, depth.astype(np.float32) / 65535, size=128) * 255)
    assert np.abs(read_gray_u8(folder / "photo_mask.png").astype(int) - expected).max() <= 1


def test_fixed_export_has_the_model_shape(knobs_checkpoint, tmp_path, capsys):
    """Through the `pdfnet export` command (the same main() as scripts/export_onnx.py), for a model with
    non-default knobs (v2025.03, concat fusion, a timm backbone, grad_checkpointing encoder; tests/test_knobs.py)."""
    from pdfnet.cli import main

    out = tmp_path / "fixed.onnx"
    assert main(["export", "--ckpt", str(knobs_checkpoint), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "fixed [1,3,256,256]" in report
    diffs = [float(line.rsplit(" ", 1)[1]) for line in report.splitlines() if "max |probability difference|" in line]
    assert len(diffs) == 2 and max(diffs) <= 1e-3
    model = onnx.load(str(out))
    assert _dims(model, 0) == [1, 3, 256, 256] and _dims(model, 1) == [1, 1, 256, 256]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_export_errors_are_one_line(tmp_path, capsys):
    assert export_script.main(["--ckpt", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "missing.pth" in capsys.readouterr().err
