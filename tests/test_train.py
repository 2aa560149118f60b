"""Training: one step, accumulation and DDP equivalence, exact resume (incl. kill -9), non-finite loss, bad
checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from pdfnet.build import build_model
from pdfnet.config import Config
from pdfnet.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from pdfnet.engine.trainer import Trainer, TrainingError, lr_factor

TINY = ["model.backbone=swin_tiny_test", "model.emb_dim=16", "model.drop_path=0.0", "model.fusion_dropout=0.0",
        "data.size=128", "data.num_workers=0", "train.batch_size=2", "train.device=cpu", "train.amp=none",
        "optim.lr=1e-3", "train.val_panels=1"]


def tiny_config(root, out_dir, *overrides: str) -> Config:
    from pdfnet.config import load_config

    return load_config(None, [*TINY, f"data.root={root}", f"train.out_dir={out_dir}", *overrides])


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _run_train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`train.py --no_progress ARGS` in this process: the script's very main(), without an interpreter start-up
    per run (the suite's time is bounded). Returns what a subprocess run would (exit status, stdout, stderr)."""
    from pdfnet.cli.train import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--no_progress", *args])
    result = subprocess.CompletedProcess(["train.py", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"train.py exited {code}: {result.stderr[-3000:]}")
    return result


def _cli_opts(root, out_dir, *extra: str) -> list[str]:
    opts = []
    for text in [*TINY, f"data.root={root}", f"train.out_dir={out_dir}", *extra]:
        opts += ["--opt", text]
    return opts


def test_one_step_trains_and_writes_a_complete_run_directory(synthetic_root, tmp_path):
    cfg = tiny_config(synthetic_root, tmp_path / "run", "train.epochs=1", "train.batch_size=8")
    trainer = Trainer(cfg, show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = trainer.fit()
    assert state.step == 1 and state.epoch == 1
    after = _weights(tmp_path / "run" / "last.pth")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["loss"] is None and history[1]["loss"] > 0 and "integrity" not in history[1]
    assert {"maxF", "wF", "Sm", "meanEm", "MAE", "loss_seg", "loss_integrity", "loss_depth", "lr"} <= history[1].keys()
    for name in ("config.yaml", "best.pth", "train.log"):
        assert (tmp_path / "run" / name).is_file(), name
    assert any((tmp_path / "run" / "tb").iterdir())
    model, loaded_cfg = model_from_checkpoint(tmp_path / "run" / "best.pth")
    assert loaded_cfg.data.size == 128 and not model.training
    # evaluate.py on best.pth reproduces the validation line that selected it, exactly.
    sys.path.insert(0, str(REPO))
    import evaluate

    assert evaluate.main(["--ckpt", str(tmp_path / "run" / "best.pth"), "--split", "DIS-VD", "--no_hce",
                          "--json", str(tmp_path / "eval.json")]) == 0
    reported = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    best_line = next(h for h in reversed(history) if h["best"])
    assert all(reported[k] == best_line[k] for k in ("maxF", "wF", "Sm", "meanEm", "MAE"))


def _one_step_delta(root, out_dir, *overrides: str) -> dict[str, torch.Tensor]:
    # optim.eps=1 makes Adam's first update ~ lr*g/(|g|+1), i.e. linear in the gradient, so weight deltas compare
    # gradients instead of their signs. Integrity and SiLog terms are batch statistics, hence off here.
    cfg = tiny_config(root, out_dir, "train.epochs=1", "optim.eps=1.0", "loss.integrity_weight=0",
                      "loss.depth_weight=0", "data.augment.enabled=false", "data.val_split=''", *overrides)
    trainer = Trainer(cfg, show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = _weights(out_dir / "last.pth")
    return {k: after[k] - before[k] for k in before if before[k].is_floating_point()}


def _assert_same_update(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    scale = max(v.abs().max().item() for v in a.values())
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert scale > 0 and worst < 1e-3 * scale, (worst, scale)


def test_gradient_accumulation_matches_a_larger_batch(synthetic_root, tmp_path):
    big = _one_step_delta(synthetic_root, tmp_path / "big", "train.batch_size=8")
    accum = _one_step_delta(synthetic_root, tmp_path / "accum", "train.batch_size=2", "train.accum_steps=4")
    _assert_same_update(big, accum)


def test_prediction_panels_label_their_columns():
    import numpy as np

    from pdfnet.engine.validation import make_panel, panel_grid

    rng = np.random.default_rng(0)
    panel = make_panel(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), rng.random((40, 60)),
                       np.zeros((40, 60), np.uint8), rng.random((40, 60)), size=96)
    grid = panel_grid([panel, panel])
    assert grid.shape == (28 + 2 * 96, 4 * 96, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[28:124], panel.permute(1, 2, 0).numpy())
    header = grid[:28]
    for column in range(4):  # dark label text in every column's header, white elsewhere
        part = header[:, column * 96:(column + 1) * 96]
        assert (part < 100).any() and (part == 255).mean() > 0.6


def test_lr_schedule_constant_warmup_and_cosine():
    cfg = Config()
    assert lr_factor(0, cfg, 10) == lr_factor(999, cfg, 10) == 1.0  # the official recipe: constant 1e-5
    cfg.optim.warmup_epochs, cfg.optim.schedule, cfg.optim.lr, cfg.optim.min_lr, cfg.train.epochs = 1, "cosine", 1e-3, \
        1e-5, 3
    assert lr_factor(0, cfg, 10) == pytest.approx(0.1) and lr_factor(9, cfg, 10) == pytest.approx(1.0)
    assert lr_factor(10, cfg, 10) == pytest.approx(1.0)
    assert lr_factor(30, cfg, 10) == pytest.approx(1e-2)  # min_lr / lr at the end


def test_exact_resume_after_a_stop(two_image_root, tmp_path):
    common = ("train.save_every_steps=1", "train.batch_size=1")  # 2 steps an epoch
    _run_train(*_cli_opts(two_image_root, tmp_path / "full", "train.epochs=2", *common))
    reference = _weights(tmp_path / "full" / "last.pth")

    # Stop after epoch 1, then resume to epoch 2 (the stored config, with train.epochs changed).
    _run_train(*_cli_opts(two_image_root, tmp_path / "stop", "train.epochs=1", *common))
    _run_train("--resume", str(tmp_path / "stop" / "last.pth"), "--opt", "train.epochs=2")
    _assert_bitwise_equal(reference, _weights(tmp_path / "stop" / "last.pth"))
    full_history = (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    resumed_history = (tmp_path / "stop" / "history.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k != "val_seconds"} for line in full_history]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "val_seconds"} for line in resumed_history]

    # kill -9 in the middle of epoch 2 and a resume from that last.pth: tests/test_multinode.py (torchrun restarts
    # the killed group, which resumes by itself; bitwise equal to the uninterrupted run).


def test_two_process_torchrun_matches_one_process(synthetic_root, tmp_path):
    one = _one_step_delta(synthetic_root, tmp_path / "one", "train.batch_size=8")
    opts = _cli_opts(synthetic_root, tmp_path / "ddp", "train.epochs=1", "optim.eps=1.0", "loss.integrity_weight=0",
                     "loss.depth_weight=0", "data.augment.enabled=false", "data.val_split=''", "train.batch_size=4")
    torch.manual_seed(0)  # train.seed: the weights every run of this config starts from
    before = build_model(tiny_config(synthetic_root, tmp_path).model).state_dict()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(REPO / "train.py"), "--no_progress", *opts], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pth")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 1
    two = {k: ckpt["model"][k] - before[k] for k in one}
    _assert_same_update(one, two)


def _poison_second_batch(trainer: Trainer) -> None:
    forward = trainer._forward_loss
    calls = {"n": 0}

    def poisoned(batch):
        total, parts = forward(batch)
        calls["n"] += 1
        return (total * float("nan"), parts) if calls["n"] == 2 else (total, parts)

    trainer._forward_loss = poisoned


def test_non_finite_loss_stops_with_a_clear_message_or_is_skipped(synthetic_root, tmp_path):
    cfg = tiny_config(synthetic_root, tmp_path / "stop", "train.epochs=1", "train.save_every_steps=1",
                      "data.val_split=''")
    trainer = Trainer(cfg, show_progress=False)
    _poison_second_batch(trainer)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1, step 1.*total=nan.*seg="):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "stop" / "last.pth")  # the last good checkpoint is intact
    assert ckpt["step"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())

    cfg = tiny_config(synthetic_root, tmp_path / "skip", "train.epochs=1", "train.on_nonfinite=skip")
    trainer = Trainer(cfg, show_progress=False)
    _poison_second_batch(trainer)
    state = trainer.fit()
    assert state.skipped == 1 and state.step == 4
    history = [json.loads(line) for line in (tmp_path / "skip" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["skipped"] == 1 and all(torch.isfinite(v).all() for v in _weights(tmp_path / "skip" /
                                                                                           "last.pth").values())


def test_corrupt_checkpoint_and_unsafe_restarts_give_clear_errors(synthetic_root, tmp_path):
    out = tmp_path / "run"
    _run_train(*_cli_opts(synthetic_root, out, "train.epochs=1", "data.val_split=''"))
    # A second plain start would overwrite the run: refused.
    again = _run_train(*_cli_opts(synthetic_root, out, "train.epochs=1"), check=False)
    assert again.returncode == 2 and "--resume auto" in again.stderr and "Traceback" not in again.stderr
    # best.pth-like files (weights only) cannot be resumed: the message says how to fine-tune instead.
    shutil.copy(out / "last.pth", tmp_path / "copy.pth")
    with pytest.raises(CheckpointError, match="train.init_from"):
        ckpt = load_checkpoint(tmp_path / "copy.pth")
        torch.save({"model": ckpt["model"], "config": ckpt["config"], "epoch": 1}, tmp_path / "weights.pth")
        Trainer(tiny_config(synthetic_root, tmp_path / "x"), resume=tmp_path / "weights.pth", show_progress=False)
    # A truncated last.pth (e.g. copied while being written elsewhere) names the file and the problem.
    data = (out / "last.pth").read_bytes()
    (out / "last.pth").write_bytes(data[: len(data) // 2])
    broken = _run_train("--resume", "auto", *_cli_opts(synthetic_root, out, "train.epochs=2"), check=False)
    assert broken.returncode == 2 and "last.pth" in broken.stderr and "corrupt" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_fine_tuning_starts_from_a_checkpoint(synthetic_root, tmp_path, tiny_checkpoint):
    cfg = tiny_config(synthetic_root, tmp_path / "ft", "train.epochs=1", "model.depth_head=true",
                      f"train.init_from={tiny_checkpoint}", "data.val_split=''")
    trainer = Trainer(cfg, show_progress=False)
    start, weights = load_checkpoint(tiny_checkpoint)["model"], trainer.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in start.items())
    assert any(k.startswith("depth_decoder.") for k in weights) and not any(k.startswith("depth_decoder.")
                                                                            for k in start)
    trainer.fit()
    wrong = tiny_config(synthetic_root, tmp_path / "ft2", "model.emb_dim=32", f"train.init_from={tiny_checkpoint}")
    with pytest.raises(TrainingError, match="does not fit"):
        Trainer(wrong, show_progress=False)


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """scripts/<name>.py's main(ARGS) in this process (no interpreter start-up), with its output captured."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(list(args))
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


def test_quickstart_end_to_end_short(tmp_path):
    """scripts/quickstart.py with the smoke config, shortened: data, training, evaluation table, panel; a second
    call resumes the finished run instead of training again."""
    args = ["--out", str(tmp_path / "qs"), "--no_progress", "--n_train", "8", "--n_val", "2",
            "--opt", "data.size=128", "--opt", "train.epochs=1", "--opt", "train.batch_size=4"]
    first = _run_script("quickstart", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "untrained (epoch 0)" in first.stdout and "best.pth (epoch 1)" in first.stdout
    assert (tmp_path / "qs" / "panel.png").is_file()
    import cv2

    assert cv2.imread(str(tmp_path / "qs" / "panel.png")).shape == (28 + 2 * 192, 4 * 192, 3)  # column labels on top
    again = _run_script("quickstart", *args)
    assert again.returncode == 0 and "resumed from" in again.stdout and "epoch 1 step" not in again.stdout


def test_ablation_variants_train_and_tabulate(tmp_path):
    result = _run_script("ablation", "--out", str(tmp_path / "abl"), "--no_progress",
                         "--variants", "full", "no_depth", "no_patches", "--n_train", "4", "--n_val", "2",
                         "--opt", "data.size=128", "--opt", "train.epochs=1", "--opt", "train.batch_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "abl" / "ablation.txt").read_text()
    assert "w/o depth input" in table and "w/o patch branch" in table and "ΔmaxF" in table
    assert "+0.000" in table.splitlines()[1]  # the reference row
    stored = load_checkpoint(tmp_path / "abl" / "no_patches" / "last.pth")["config"]
    assert stored["model"]["use_patches"] is False and stored["model"]["use_depth"] is True


def test_ema_and_gradient_checkpointing_switches(synthetic_root, tmp_path):
    cfg = tiny_config(synthetic_root, tmp_path / "ema", "train.epochs=1", "train.ema_decay=0.5",
                      "model.grad_checkpointing=true", "train.batch_size=4")
    trainer = Trainer(cfg, show_progress=False)
    stages = [m for m in trainer.model.backbone.modules() if hasattr(m, "grad_checkpointing")]
    assert stages and all(m.grad_checkpointing for m in stages)
    trainer.fit()
    last = load_checkpoint(tmp_path / "ema" / "last.pth")
    ema = last["ema"]["module"]
    assert last["ema"]["updates"] == 2  # one update per optimizer step
    assert any(not torch.equal(ema[k], last["model"][k]) for k in last["model"] if k in ema)
    best = load_checkpoint(tmp_path / "ema" / "best.pth")
    assert best["ema"] is True  # best.pth holds the validated (EMA) weights
    if best["epoch"] == 1:
        assert all(torch.equal(best["model"][k], ema[k]) for k in best["model"])


def test_a_missing_data_root_is_named_and_leaves_no_run_directory(tmp_path):
    result = _run_train(*_cli_opts(tmp_path / "nowhere", tmp_path / "run", "train.epochs=1"), check=False)
    assert result.returncode == 2 and f"data root {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_gpu_that_is_not_there_is_one_line(synthetic_root, tmp_path):
    result = _run_train(*_cli_opts(synthetic_root, tmp_path / "run", "train.device=cuda"), check=False)
    assert result.returncode == 2 and "CUDA is not available here" in result.stderr and "train.device=cpu" in \
        result.stderr and "Traceback" not in result.stderr


def test_ema_equals_averaged_model_without_host_reads_and_loads_its_checkpoints():
    """The EMA gives AveragedModel's weights bitwise, reads nothing from the device per update (AveragedModel
    compared its on-device counter every step), and loads the state an AveragedModel saved (older runs)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from torch.utils._python_dispatch import TorchDispatchMode

    from pdfnet.engine.ema import EMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    ours, theirs = EMA(model, 0.9), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)

    class HostReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            HostReads.count += str(func) in ("aten._local_scalar_dense.default", "aten.is_nonzero.default")
            return func(*args, **(kwargs or {}))

    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        with HostReads():
            ours.update(model)
        theirs.update_parameters(model)
    assert HostReads.count == 0 and ours.updates == 4
    for a, b in zip(ours.module.parameters(), theirs.module.parameters()):
        assert torch.equal(a, b)
    restored = EMA(model, 0.9)
    restored.load_state_dict(theirs.state_dict())
    assert restored.updates == 4
    assert all(torch.equal(a, b) for a, b in zip(restored.module.parameters(), ours.module.parameters()))


def test_the_recipes_missing_swin_file_is_named_with_where_to_get_it(synthetic_root, tmp_path):
    result = _run_train("--config", str(REPO / "configs" / "dis5k.yaml"),
                        *_cli_opts(synthetic_root, tmp_path / "run", "train.epochs=1")[2 * len(TINY):], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "model.pretrained='checkpoints/swin_base_patch4_window12_384_22k.pth'" in line and "\n" not in line
    assert "swin_base_patch4_window12_384_22k.pth" in line and "timm/swin_base_patch4_window12_384.ms_in22k" in line
    assert not (tmp_path / "run").exists()
