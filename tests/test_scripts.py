"""Command-line scripts: official checkpoint conversion (to .pth and to a hub folder), the benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, load_script, official_reference
from pdfnet.engine.checkpoint import load_checkpoint, model_from_checkpoint


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _in_process(script: str, *args: str) -> subprocess.CompletedProcess:
    """scripts/<script>.py's main(ARGS) in this process (the wrapper's own code path), output captured."""
    import contextlib
    import io

    module = load_script(script)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(list(args))
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def test_convert_official_round_trip(tmp_path):
    """scripts/convert_official.py writes our .pth and a hub folder; both reproduce the official logits."""
    sd, case = official_reference("official_v1")
    src = tmp_path / "PDFNet_Best.pth"
    torch.save(sd, src)
    out, hub_dir, metrics = tmp_path / "ours.pth", tmp_path / "hub", tmp_path / "te1.json"
    metrics.write_text(json.dumps({"metrics": {"maxF": 0.9123, "wF": 0.8, "Sm": 0.9, "meanEm": 0.95, "MAE": 0.03,
                                               "HCE": 1001.2}, "n_images": 500}))
    proc = _in_process("convert_official", str(src), str(out), "--hub_dir", str(hub_dir), "--metrics", str(metrics))
    assert proc.returncode == 0, proc.stderr
    assert "variant v2025.03, depth head yes" in proc.stdout
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["model"]["variant"] == "v2025.03" and "epoch" in ckpt
    image = torch.from_numpy(np.load(case / "in_img.npy"))
    depth = torch.from_numpy(np.load(case / "in_depth.npy"))
    card = (hub_dir / "README.md").read_text()
    assert "v2025.03" in card and "| evaluation | 500 | 0.912 |" in card and "license: other" in card
    for source in (out, hub_dir):
        model, cfg = model_from_checkpoint(source)
        assert cfg.model.depth_head and model.variant == "v2025.03" and not model.training
        with torch.no_grad():
            logits = model(image, depth)[0].numpy()
        assert np.abs(logits - np.load(case / "out_logits.npy")).max() <= 1e-4


def test_convert_official_bad_input(tmp_path):
    proc = _in_process("convert_official", str(tmp_path / "missing.pth"), str(tmp_path / "o.pth"))
    assert proc.returncode == 1 and "official checkpoint not found" in proc.stderr
    assert not (tmp_path / "o.pth").exists()


@pytest.mark.parametrize("size", [128])
def test_benchmark_inference_prints_table_and_json(tmp_path, size):
    import cv2

    out = tmp_path / "bench.json"
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8))
    proc = _run("scripts/benchmark_inference.py", "--size", str(size), "--runs", "1", "--warmup", "0",
                "--threads", "1", "--json", str(out), "--backbone", "swin_tiny_test", "--mm_size", "512",
                "--dtype", "bf16", "--agreement", str(photos), "--agreement_images", "2",
                "--depth_model", "S")  # the paper's PDFNet-S generator: its real architecture, random weights
    assert proc.returncode == 0, proc.stderr
    assert "ours" in proc.stdout and "peak MiB" in proc.stdout
    summary = json.loads(out.read_text())
    end_to_end = summary["end_to_end"]  # depth and segmentation per photo, separately and together
    assert end_to_end["depth_s"] > 0 and end_to_end["total_s"] == pytest.approx(
        end_to_end["depth_s"] + end_to_end["segmentation_s"]) and "depth small: 24.8M parameters" in proc.stdout
    assert end_to_end["paper_fps_rtx4090"] == 5.7
    result = summary["results"][0]
    assert result["impl"] == "ours" and result["dtype"] == "bf16" and result["median_s"] > 0
    # bf16 runs only where it is native (as --half does); elsewhere float32, and the matmul peak is in that dtype
    from pdfnet.device import native_bf16

    assert result["compute_dtype"] == ("bfloat16" if native_bf16(torch.device("cpu")) else "float32")
    assert result["peak_mem_mib"] > 0 and result["gflop_per_image"] > 0 and result["matmul_peak_gflops"] > 0
    assert 0 < result["fraction_of_matmul_peak"] < 2 and "GFLOP per image" in proc.stdout
    # bf16 against float32 on the folder's first two images (float32 twice on a CPU without native bf16)
    assert [r["image"] for r in summary["agreement"]] == ["p0", "p1"]
    assert all(0 <= r["max_abs_prob_diff"] < 0.5 and 0 <= r["mask_iou_at_0.5"] <= 1 for r in summary["agreement"])
    assert "IoU@0.5" in proc.stdout
    bad = _run("scripts/benchmark_inference.py", "--agreement", str(photos))
    assert bad.returncode == 2 and "half-precision" in bad.stderr


def test_runtime_code_does_not_need_the_dev_extras():
    """evaluate.py and the library must import and compute with only requirements.txt installed."""
    code = (
        "import builtins, importlib\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('skimage', 'scipy', 'py_sod_metrics', 'pytest'):\n"
        "        raise ImportError('dev-only: ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "for m in ('pdfnet.metrics', 'pdfnet.metrics.report', 'pdfnet.data.dataset', 'pdfnet.depth', 'pdfnet.losses',"
        " 'pdfnet.engine.inference', 'evaluate'):\n"
        "    importlib.import_module(m)\n"
        "import numpy as np\n"
        "from pdfnet.metrics import Evaluator\n"
        "gt = np.zeros((40, 40), np.uint8); gt[10:30, 10:30] = 255\n"
        "e = Evaluator(); e.update(gt, gt, 'a'); assert e.compute()['metrics']['HCE'] == 0\n"
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr


def test_readme_figure_is_drawn_from_predict_outputs(tiny_checkpoint, tmp_path):
    from pdfnet.data.io import read_rgb_u8

    figure = load_script("readme_figure")
    out = tmp_path / "figure.jpg"
    assert figure.main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--scenes", "2", "--size", "96"]) == 0
    assert read_rgb_u8(out).shape == (2 * 96 + 4, 5 * 96 + 4 * 4, 3)  # 2 rows x 5 panels, 4-px gaps
    assert figure.main(["--ckpt", str(tmp_path / "none.pth"), "--out", str(out)]) == 2


def test_benchmark_tiling_reports_time_and_memory(tiny_checkpoint, tmp_path, capsys):
    from pdfnet.data.io import write_png

    bench = load_script("benchmark_tiling")
    rng = np.random.default_rng(0)
    for split, (h, w) in (("A", (100, 90)), ("B", (300, 410))):
        write_png(tmp_path / "data" / split / "im" / f"{split}.png", rng.integers(0, 255, (h, w, 3), np.uint8))
        write_png(tmp_path / "data" / split / "gt" / f"{split}_mask.png", rng.integers(0, 255, (h, w), np.uint8))
    out = tmp_path / "rows.json"
    bench.main(["--root", str(tmp_path / "data"), "--ckpt", str(tiny_checkpoint), "--size", "128", "--overlap", "32",
                "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["image"] for r in rows] == ["A.png", "B.png"]  # images only, smallest first; masks ignored
    assert [r["tiles"] for r in rows] == [1, 3 * 4]
    assert all(r["tiled_added_mib"] >= 0 and r["plain_s"] > 0 for r in rows)
    assert "s per model pass" in capsys.readouterr().out


def test_benchmark_training_prints_table_and_json(tmp_path):
    out = tmp_path / "train_bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark_training.py"), "--size", "128", "--batch", "1",
           "--backbone", "swin_tiny_test", "--emb_dim", "16", "--amp", "bf16", "--grad_checkpointing", "none", "all",
           "--steps", "1", "--device", "cpu", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["grad_checkpointing"] for r in rows] == ["none", "all"]
    for r in rows:
        assert {"step_s", "peak_mib", "saved_for_backward_mib", "device", "size", "batch", "amp"} <= r.keys()
        assert r["size"] == 128 and r["amp"] == "bf16" and r["peak_mib"] > 0 and r["step_s"] > 0
    assert rows[1]["saved_for_backward_mib"] < rows[0]["saved_for_backward_mib"]  # checkpointing keeps less
    assert "saved by module" in done.stdout and "all" in done.stdout
    bad = subprocess.run(cmd[:2] + ["--size", "100"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "multiple of 64" in bad.stderr


def test_benchmark_training_official_comparison_helpers(tmp_path, capsys):
    """The pieces of --official_dir that run without the official code: the gradient comparison, the checks of
    the arguments, and the first-step gradients handed to the comparison (taken before the optimizer step)."""
    from pdfnet.build import build_loss, build_model
    from pdfnet.config import load_config
    from pdfnet.engine.profiling import measure_training_steps, synthetic_batch

    bench = load_script("benchmark_training")
    ref = {"a": torch.tensor([3.0, 4.0]), "b": torch.zeros(2), "only_official": torch.ones(1)}
    got = {"a": torch.tensor([3.0, 4.05]), "b": torch.zeros(2), "only_ours": torch.ones(1)}
    torch.save(ref, tmp_path / "off.pt")
    torch.save(got, tmp_path / "ours.pt")
    diff, where, one_sided = bench.gradient_difference(tmp_path / "off.pt", tmp_path / "ours.pt")
    assert diff == pytest.approx(0.05 / 5, rel=1e-5) and where == "a" and one_sided == ["only_official", "only_ours"]

    assert bench.main(["--official_dir", str(tmp_path)]) == 2
    assert "no models/PDFNet.py" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "PDFNet.py").write_text("")
    assert bench.main(["--official_dir", str(tmp_path), "--amp", "bf16"]) == 2
    assert "runs float32" in capsys.readouterr().err

    cfg = load_config(None, ["model.backbone=swin_tiny_test", "model.emb_dim=16", "model.drop_path=0",
                             "model.fusion_dropout=0", "data.size=128", "train.amp=none"])
    data = synthetic_batch(1, 128, torch.device("cpu"))
    seen = {}
    torch.manual_seed(0)
    measure_training_steps(cfg, torch.device("cpu"), 1, steps=1, model=build_model(cfg.model), data=data,
                           on_first_gradients=lambda m: seen.update(
                               {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    seg, dep = model(data["image"], data["depth"], return_depth=True)
    build_loss(cfg)(seg, data["mask"], data["depth_target"], dep)[0].backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert seen.keys() == expected.keys()
    assert all(torch.equal(seen[n], expected[n]) for n in expected)


def test_runtime_pins_match_the_test_oracles_so_both_installs_resolve_alike():
    """pysodmetrics (dev extra) caps numpy and OpenCV; the runtime dependencies carry the same caps, so that
    `pip install -e .` and `pip install -e ".[dev]"` pick the same versions (the tests check what users run)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        oracle = {r.name: r.specifier for r in map(Requirement, metadata.requires("pysodmetrics") or [])}
    except metadata.PackageNotFoundError:
        pytest.skip("pysodmetrics is not installed")
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")
    text = (REPO / "pyproject.toml").read_text()
    ours = {r.name: r.specifier for r in map(Requirement, tomllib.loads(text)["project"]["dependencies"])}
    for name in ("numpy", "opencv-python-headless"):
        caps = {s for s in oracle[name] if s.operator in ("<", "<=")}
        assert caps and caps <= set(ours[name]), (name, str(oracle[name]), str(ours[name]))


def test_benchmark_gpu_knows_the_datasheet_peaks_and_the_epoch_hours(tmp_path):
    bench = load_script("benchmark_gpu")
    assert bench.datasheet_peak("NVIDIA H100 80GB HBM3")[0] == "H100 SXM"
    assert bench.datasheet_peak("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert bench.datasheet_peak("NVIDIA H200")[1][0] == 989.4
    assert bench.datasheet_peak("NVIDIA GeForce RTX 4090")[1][:2] == (165.2, 82.6)
    assert bench.datasheet_peak("Tesla T4") == (None, None)
    args = bench.parse_args(["--device", "cpu", "--quick", "--workdir", str(tmp_path)])
    bench._write_partial(args, "inference", {"rows": [
        {"impl": "ours eager", "dtype": "tf32", "images_per_s": 2.0},
        {"impl": "ours eager", "dtype": "bf16", "images_per_s": 4.7}]})
    hours = bench._hours_per_100_epochs(3.0, args)  # 3000 images at 3/s: 100 epochs = 27.78 h; DIS-VD at 4.7/s
    assert hours["train"] == 27.78 and hours["validation"] == round(100 * 470 / 4.7 / 3600, 2)
    assert hours["validation_share"] == round(hours["validation"] / hours["total"], 3)
    assert bench._cell("line 1\nline | 2\n") == "line 1 / line / 2"


@pytest.mark.slow
def test_benchmark_gpu_quick_runs_every_section_on_cpu(tmp_path):
    """The GPU benchmark's CPU check (as CI runs it): every section in its own process, the tiny model, a JSON and a
    markdown report, no failed section or row, FLOPs the same for the reference and the lean forms."""
    # The sections one after another in one process (--inline: an interpreter start each would be ~25 s of the
    # suite); the per-section processes of a device run are checked once, on the cheapest section, below.
    done = _run("scripts/benchmark_gpu.py", "--device", "cpu", "--quick", "--inline", "--out", str(tmp_path),
                timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bench = load_script("benchmark_gpu")
    report = json.loads((tmp_path / "benchmark_gpu.json").read_text())
    results = report["results"]
    assert set(results) == set(bench.SECTIONS) and not bench.row_errors(report)
    assert results["environment"]["matmul_fp32_tflops"] > 0
    inference = results["inference"]["rows"]
    assert {r["impl"] for r in inference} == {"ours eager", "ours compiled"} and all(r["mfu"] > 0 for r in inference)
    training = results["training"]["rows"]
    assert {(r["impl"], r["grad_checkpointing"]) for r in training} == {("ours eager", "none")}
    assert all(r["host_issue_s"] > 0 and r["tflop_per_step"] > 0 for r in training)
    assert results["training"]["hours_per_100_epochs"]["validation"] > 0
    impl = {(r["impl"], r["grad_checkpointing"]): r for r in results["impl"]["rows"]}
    assert impl["lean", "none"]["tflop_per_step"] == impl["reference", "none"]["tflop_per_step"]
    assert results["end_to_end"]["rows"][0]["depth_ms"] > 0
    assert all(r["images_per_s"] > 0 and r["fed_ratio"] > 0 for r in results["data"]["rows"])
    assert [r["gpus"] for r in results["ddp"]["rows"]] == [1, 2]
    assert all(r["scaling_efficiency"] > 0 for r in results["ddp"]["rows"])
    text = (tmp_path / "benchmark_gpu.md").read_text()
    assert all(f"## {name}" in text for name in bench.SECTIONS[1:])
    own = _run("scripts/benchmark_gpu.py", "--device", "cpu", "--quick", "--sections", "environment", "--out",
               str(tmp_path / "own"), timeout=300)
    assert own.returncode == 0 and "[environment]" in own.stdout, own.stderr[-2000:]
    assert json.loads((tmp_path / "own" / "benchmark_gpu.json").read_text())["results"]["environment"][
        "matmul_fp32_tflops"] > 0


def test_tile_depth_study_prints_its_three_ways(tiny_checkpoint):
    done = _run("scripts/tile_depth_study.py", "--ckpt", str(tiny_checkpoint), "--scenes", "1", "--scale", "2",
                timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    values = {line[:24].strip(): [float(v) for v in line[24:].split()] for line in lines[2:]}
    assert list(values) == ["plain", "tiles, per-tile depth", "tiles, per-image depth"]
    assert all(len(v) == 2 and 0 <= v[0] <= 1 and v[1] > 0 for v in values.values())
