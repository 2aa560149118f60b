"""The ``pdfnet`` console command: dispatch, quick ``--help`` (no torch import), ``--opt`` forms, and one real run
of every subcommand through the dispatcher (the demo's run is in test_demo.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

import numpy as np
import torch

from conftest import REPO, official_reference
from pdfnet.cli import COMMANDS, main
from pdfnet.data.io import read_gray_u8, write_png

SCRIPTS = {"train": "train.py", "eval": "evaluate.py", "predict": "scripts/predict.py",
           "depth": "scripts/prepare_depth.py", "export": "scripts/export_onnx.py",
           "convert": "scripts/convert_official.py", "demo": "scripts/demo.py"}


def _python(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_console_script_is_declared_and_python_m_works():
    declared = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    if "pdfnet" in declared:  # installed with pip install -e .
        assert declared["pdfnet"] == "pdfnet.cli:console"
    else:
        assert 'pdfnet = "pdfnet.cli:console"' in (REPO / "pyproject.toml").read_text()
    proc = _python("-m", "pdfnet", "--help")
    assert proc.returncode == 0 and all(name in proc.stdout for name in COMMANDS)
    proc = _python("-m", "pdfnet", "prdict")
    assert proc.returncode == 2 and "unknown command 'prdict' (did you mean 'predict'?)" in proc.stderr


def test_every_subcommand_helps_without_importing_torch():
    code = ("import sys\nfrom pdfnet.cli import COMMANDS, main\n"
            "for name in COMMANDS:\n    assert main([name, '--help']) == 0, name\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n")
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO_TORCH")
    for name in COMMANDS:
        assert f"usage: pdfnet {name}" in proc.stdout
    # Every option says what it is (no bare entries such as '--device DEVICE' alone on its line).
    for name in COMMANDS:
        text = subprocess.run([sys.executable, "-m", "pdfnet", name, "--help"], cwd=REPO, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")).stdout
        lines = text.splitlines() + [""]
        bare = [line.strip() for line, after in zip(lines, lines[1:]) if line.startswith("  --")
                and len(line.split()) <= 2 and not (after.startswith("    ") and not after.strip().startswith("-"))]
        assert not bare, (name, bare)


def test_scripts_are_the_subcommands():
    """scripts/*.py, train.py and evaluate.py run the very function of their subcommand (no second copy)."""
    for name, script in SCRIPTS.items():
        spec = importlib.util.spec_from_file_location(f"wrapper_{name}", REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        target = importlib.import_module(f"pdfnet.cli.{COMMANDS[name][0]}")
        assert module.main is target.main, script


def test_a_missing_checkpoint_is_reported_before_torch_loads():
    code = ("import sys\nfrom pdfnet.cli import main\n"
            "rc = main(['predict', '--ckpt', 'nope.pth', '--input', '.', '--output', 'x', '--depth_dir', '.'])\n"
            "print(rc, 'torch' in sys.modules)\n")
    proc = _python("-c", code)
    assert proc.stdout.strip() == "2 False", proc.stderr
    assert "checkpoint not found: nope.pth" in proc.stderr


def test_opt_accepts_both_spellings():
    from pdfnet.cli.train import parse_args

    args = parse_args(["--opt", "a.b=1", "c.d=2", "--opt", "e.f=3", "--no_progress"])
    assert args.opt == ["a.b=1", "c.d=2", "e.f=3"] and args.no_progress


def test_train_then_eval_and_predict_through_pdfnet(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["model.backbone=swin_tiny_test", "model.emb_dim=16", "model.depth_head=false", "data.size=128",
            "data.num_workers=0", "train.batch_size=8", "train.device=cpu", "train.amp=none", "train.epochs=1",
            "train.val_panels=0", "train.val_hce=false"]
    assert main(["train", "--no_progress", "--config", str(REPO / "configs" / "smoke.yaml"),
                 "--opt", *tiny, f"data.root={synthetic_root}", "--opt", f"train.out_dir={run}"]) == 0
    assert (run / "best.pth").is_file()

    assert main(["eval", "--ckpt", str(run / "best.pth"), "--split", "DIS-VD", "--no_hce",
                 "--json", str(tmp_path / "vd.json")]) == 0
    assert json.loads((tmp_path / "vd.json").read_text())["n_images"] == 2
    gt_dir = synthetic_root / "DIS-VD" / "gt"
    assert main(["eval", "--pred_dir", str(gt_dir), "--gt_dir", str(gt_dir), "--no_hce"]) == 0
    assert "DIS-VD" in capsys.readouterr().out

    out = tmp_path / "masks"
    assert main(["predict", "--ckpt", str(run / "best.pth"), "--input", str(synthetic_root / "DIS-VD" / "im"),
                 "--depth_dir", str(synthetic_root / "DIS-VD" / "depth"), "--output", str(out), "--workers", "0",
                 "--format", "rgba"]) == 0
    assert len(list(out.glob("*.png"))) == 2
    # `pdfnet export`'s run is tests/test_export.py::test_fixed_export_has_the_model_shape


def test_depth_through_pdfnet(synthetic_root, tiny_depth_model, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "DIS-VD" / "im", root / "val" / "im")
    args = ["depth", "--data_root", str(root), "--splits", "val", "--model", str(tiny_depth_model),
            "--device", "cpu", "--out_name", "depth_tiny"]
    assert main(args) == 0
    maps = sorted((root / "val" / "depth_tiny").glob("*.png"))
    assert len(maps) == 2 and read_gray_u8(maps[0]).shape == (128, 128)


def test_depth_offline_names_the_flag_and_the_download(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_png(tmp_path / "data" / "val" / "im" / "a.png", np.zeros((32, 32, 3), np.uint8))
    assert main(["depth", "--data_root", str(tmp_path / "data"), "--splits", "val", "--model_size", "small",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "depth-anything/Depth-Anything-V2-Small-hf" in err and "(--model_size)" in err
    # The folder goes to --model (argparse would refuse a folder for --model_size).
    assert "hf download depth-anything/Depth-Anything-V2-Small-hf --local-dir DIR` on a machine with network, then " \
           "pass --model DIR" in err


def test_predict_offline_names_the_depth_maps_route(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_png(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", "--ckpt", str(tiny_checkpoint), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), "--depth_model", "small", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "pass --depth_model DIR; or pass your own depth maps with --depth_dir" in err


def test_eval_without_depth_names_both_ways_to_get_it(synthetic_root, tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "data"
    for kind in ("im", "gt"):
        shutil.copytree(synthetic_root / "DIS-VD" / kind, root / "DIS-TE1" / kind)
    assert main(["eval", "--ckpt", str(tiny_checkpoint), "--split", "DIS-TE1", "--data_root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "missing depth folder" in err and "pdfnet depth" in err and "--depth_model large" in err


def test_convert_through_pdfnet(tmp_path):
    import torch

    sd, _ = official_reference("official")
    torch.save(sd, tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), "--hub_dir", str(tmp_path / "hub")]) == 0
    from pdfnet.models import PDFNet

    assert PDFNet.from_pretrained(str(tmp_path / "hub")).variant == "v2026"
    assert main(["convert", str(tmp_path / "official.pth")]) == 2  # no output named


def test_slurm_script_starts_one_torchrun_per_node_with_a_c10d_rendezvous(tmp_path):
    """scripts/slurm_train.sh with stand-ins for scontrol and srun (which records its command line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n")
    (bin_dir / "srun").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'srun.txt'}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
           "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
           "SLURM_GPUS_PER_NODE": "h100:4"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm_train.sh"), "--config", "configs/dis5k.yaml"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    command = (tmp_path / "srun.txt").read_text().split()
    assert command[:2] == ["--kill-on-bad-exit=1", "torchrun"]
    text = " ".join(command)
    assert "--nnodes 2 --nproc_per_node 4" in text and "--rdzv_id 4242 --rdzv_backend c10d" in text
    assert "--rdzv_endpoint gpu-node-07:29500" in text and "--max_restarts 3" in text
    assert text.endswith("train.py --resume auto --no_progress --config configs/dis5k.yaml")


def test_every_flag_a_hint_names_exists(tmp_path, tiny_checkpoint, capsys):
    """The hints the commands print name flags the command has: eval's missing data root says --data_root (it has no
    --opt), and every `--flag` in a printed hint is one of that command's options."""
    import re

    from pdfnet.cli import COMMANDS

    def options(name: str) -> set[str]:
        text = subprocess.run([sys.executable, "-m", "pdfnet", name, "--help"], cwd=REPO, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")).stdout
        return set(re.findall(r"--[a-z_]+", text))

    assert main(["eval", "--ckpt", str(tiny_checkpoint), "--split", "DIS-VD", "--data_root", str(tmp_path / "no"),
                 "--device", "cpu", "--no_hce"]) == 2
    err = capsys.readouterr().err
    assert "pass --data_root DIR" in err and "--opt" not in err
    for name, argv in (("eval", ["eval", "--ckpt", str(tiny_checkpoint), "--split", "DIS-VD", "--device", "cpu",
                                 "--data_root", str(tmp_path / "no")]),
                       ("depth", ["depth", "--data_root", str(tmp_path / "no"), "--device", "cpu"]),
                       ("predict", ["predict", "--ckpt", str(tiny_checkpoint), "--input", str(tmp_path / "no.png"),
                                    "--output", str(tmp_path / "o"), "--device", "cpu", "--depth_dir", "."]),
                       ("convert", ["convert", str(tiny_checkpoint), str(tmp_path / "c.pth")])):
        assert name in COMMANDS
        main(argv)
        named = set(re.findall(r"(?<![\w-])--[a-z_]+", capsys.readouterr().err))
        assert named <= options(name), (name, named - options(name))


def test_convert_writes_our_own_checkpoint_as_a_hub_folder_and_says_a_copy_is_not_needed(tiny_checkpoint, tmp_path,
                                                                                         capsys):
    from pdfnet.engine.inference import load_model

    assert main(["convert", str(tiny_checkpoint), str(tmp_path / "copy.pth")]) == 2
    err = capsys.readouterr().err
    assert "already a checkpoint of this project" in err and "--hub_dir DIR" in err
    assert not (tmp_path / "copy.pth").exists()
    assert main(["convert", str(tiny_checkpoint), "--hub_dir", str(tmp_path / "hub")]) == 0
    (ours, cfg), (hub, hub_cfg) = load_model(tiny_checkpoint, "cpu"), load_model(tmp_path / "hub", "cpu")
    assert hub_cfg.data.size == cfg.data.size == 128
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), hub.state_dict().values()))
