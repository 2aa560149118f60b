"""scripts/gpu_selfcheck.py: every section runs (tiny model on CPU, as CI can), the report is written, and a failed
check makes the exit status non-zero."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import gpu_selfcheck  # noqa: E402


@pytest.mark.slow
def test_quick_cpu_run_of_every_section(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_selfcheck.py"), "--device", "cpu", "--quick",
           "--compile_backend", "eager", "--out", str(tmp_path)]
    # The limit only catches a hang (the run takes ~1 min on 2 cores; a busy machine may take several times that).
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_selfcheck.json").read_text())
    assert report["failed"] == [] and list(report["results"]) == list(gpu_selfcheck.SECTIONS)
    results = report["results"]
    assert all("error" not in r for r in results.values()), {k: r.get("error") for k, r in results.items()}
    assert results["environment"]["device"] == "cpu"
    assert results["bf16"]["mask_iou_at_0.5"] > 0.9
    assert {"batch1_fp32_s_per_image", "batch2_bf16_peak_mib"} <= results["inference"].keys()
    assert {f"batch{b}_{m}" for b in (1, 2) for m in ("none", "encoder", "all")} <= results["training"].keys()
    assert results["training"]["amp"] == ("none" if gpu_selfcheck.cpu_emulates_bf16(torch.device("cpu")) else "bf16")
    assert results["overfit"]["fell_by"] >= 0.5 and results["ddp"]["replicas_identical"] is True
    assert results["depth"]["maps_ok"] is True and "--quick on a CPU" in results["compile"]["skipped"]
    table = (tmp_path / "gpu_selfcheck.md").read_text()
    assert "| training | batch2_all |" in table and "All checks passed." in table


def test_a_failed_check_fails_the_run(tmp_path, monkeypatch):
    class Flat:
        losses = [1.0] * 30

    monkeypatch.setattr(gpu_selfcheck, "measure_training_steps", lambda *a, **k: Flat())
    assert gpu_selfcheck.main(["--device", "cpu", "--quick", "--sections", "overfit", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_selfcheck.json").read_text())
    assert report["failed"] and "overfit" in report["failed"][0]
    assert "FAILED" in (tmp_path / "gpu_selfcheck.md").read_text()
    assert gpu_selfcheck.main(["--device", "cpu", "--sections", "bogus", "--out", str(tmp_path)]) == 2


def test_the_report_is_written_after_every_section(tmp_path, monkeypatch):
    """A run stopped by a time limit keeps the sections it finished; a missing reference folder is named."""
    seen_on_disk = {}

    def depth_section(device, checks):
        seen_on_disk.update(json.loads((tmp_path / "gpu_selfcheck.json").read_text())["results"])
        return {"maps_ok": True}

    monkeypatch.setattr(gpu_selfcheck, "depth", depth_section)
    missing = tmp_path / "no-reference"
    assert gpu_selfcheck.main(["--device", "cpu", "--quick", "--sections", "environment", "parity", "depth",
                               "--reference", str(missing), "--out", str(tmp_path)]) == 0
    assert list(seen_on_disk) == ["environment", "parity"]
    assert str(missing / "official_v1" / "manifest.json") in seen_on_disk["parity"]["official_v1"]
