"""The loop around the model as a GPU needs it, tested on CPU: backend switches of the inference commands, the
allocator setting of training, fused AdamW on CUDA, regional compile without silent eager fallback, checkpoint writes
in the background (atomic, ordered, failures raised), validation batched and in half precision giving `pdfnet eval`'s
numbers."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from conftest import REPO, _synthetic_tree
from pdfnet import device as devices
from pdfnet.build import build_model
from pdfnet.config import OptimConfig, load_config
from pdfnet.engine.compile import compile_for_training, regional_blocks, variants_needed
from pdfnet.engine.optim import make_optimizer
from pdfnet.engine.writer import BackgroundWriter, snapshot
from pdfnet.models.backbone import SwinBlock

TINY = ["model.backbone=swin_tiny_test", "model.emb_dim=16", "model.drop_path=0", "model.fusion_dropout=0",
        "model.impl=reference", "data.size=128"]


@pytest.fixture()
def backend_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "configure_cuda_backends", lambda device, tf32: calls.append((device.type, tf32)))
    return calls


@pytest.mark.parametrize("extra, tf32", [([], True), (["--no_tf32"], False)])
def test_predict_sets_cudnn_autotuning_and_tf32_unless_told_not_to(tiny_checkpoint, tmp_path, backend_calls,
                                                                   extra, tf32):
    import numpy as np
    from PIL import Image

    from pdfnet.cli import predict

    photo = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "depth" / "a.png")
    assert predict.main(["--ckpt", str(tiny_checkpoint), "--input", str(photo), "--output", str(tmp_path / "out"),
                         "--depth_dir", str(tmp_path / "depth"), "--device", "cpu", *extra]) == 0
    assert backend_calls == [("cpu", tf32)]  # configure_cuda_backends itself leaves a CPU untouched (test_cuda_paths)


def test_training_asks_for_expandable_segments_unless_the_user_chose(monkeypatch, tmp_path):
    from pdfnet.cli import train

    seen = []

    def stop(*args, **kwargs):
        seen.append(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
        raise SystemExit(0)

    monkeypatch.setattr(train, "resolve_run", stop)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # recorded: whatever main sets is undone after the test
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    with pytest.raises(SystemExit):
        train.main(["--opt", f"train.out_dir={tmp_path}"])
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    with pytest.raises(SystemExit):
        train.main(["--opt", f"train.out_dir={tmp_path}"])
    assert seen == ["expandable_segments:True", "max_split_size_mb:128"]


def test_adamw_is_fused_on_cuda_and_the_fused_update_equals_the_foreach_one():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    cfg = OptimConfig()
    assert make_optimizer(model, cfg, torch.device("cuda", 0)).defaults["fused"] is True
    assert not make_optimizer(model, cfg, torch.device("cpu")).defaults["fused"]
    # The fused kernel exists on CPU too: one step of each from the same state, to rounding.
    twins = [torch.nn.Linear(8, 4) for _ in range(2)]
    for twin in twins:
        twin.load_state_dict(model.state_dict())
        twin(torch.ones(3, 8)).square().sum().backward()
    fused = torch.optim.AdamW(twins[0].parameters(), lr=cfg.lr, fused=True)
    foreach = torch.optim.AdamW(twins[1].parameters(), lr=cfg.lr, foreach=True)
    fused.step()
    foreach.step()
    for a, b in zip(twins[0].parameters(), twins[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_regional_compile_compiles_every_block_in_place_with_room_for_every_variant():
    """The blocks ``train.compile=blocks`` compiles, and dynamo's recompile limit raised to the variants they need
    (shift x encoder pass x batch shape: training, validation and its last batch). Running them without an eager
    fallback, in training and validation, is the two-process test in test_distributed_training.py."""
    cfg = load_config(None, TINY)
    model = build_model(cfg)
    configs = {(m.norm1.normalized_shape, m.shift) for m in model.modules() if isinstance(m, SwinBlock)}
    assert len({shift for _, shift in configs}) == 2 and variants_needed(model) == max(8, len(configs) * 2 * 3)
    blocks = regional_blocks(model)
    swin = [m for m in model.modules() if isinstance(m, SwinBlock)]
    assert swin and all(any(m is b for b in blocks) for m in swin)
    with torch._dynamo.config.patch(recompile_limit=8):  # restored afterwards: the limit is process-wide
        assert compile_for_training(model, "blocks", "eager") is model
        assert torch._dynamo.config.recompile_limit == variants_needed(model) > 8
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert compile_for_training(model, "none") is model
    with pytest.raises(ValueError, match="train.compile must be one of"):
        compile_for_training(model, "everything")


def test_background_writes_are_ordered_atomic_snapshots_and_failures_surface(tmp_path):
    from pdfnet.engine.checkpoint import atomic_save

    weights = {"w": torch.zeros(3)}
    copy = snapshot({"model": weights, "steps": [1, (2, torch.ones(1))]})
    weights["w"].add_(1)  # training goes on: the snapshot does not move
    assert torch.equal(copy["model"]["w"], torch.zeros(3)) and isinstance(copy["steps"][1], tuple)
    writer = BackgroundWriter()
    order = []
    for i in range(5):
        writer.submit(lambda i=i: order.append(i))
    writer.submit(lambda: atomic_save(copy, tmp_path / "last.pth"))
    writer.wait()
    assert order == list(range(5)) and [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left
    assert torch.equal(torch.load(tmp_path / "last.pth", weights_only=True)["model"]["w"], torch.zeros(3))

    def disk_full():
        raise OSError(28, "No space left on device")

    writer.submit(disk_full)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.submit(disk_full)
    writer._pending[-1].exception()  # let it fail, then the next submit reports it
    with pytest.raises(OSError, match="No space left"):
        writer.submit(lambda: None)
    writer.close()


def test_half_batched_validation_with_a_metric_pool_gives_pdfnet_eval_numbers(tmp_path):
    """Validation under train.val_half with batches of 3 and metrics in 2 worker processes reproduces what `pdfnet
    eval --half --batch_size 3` reports for best.pth, to the last digit."""
    from pdfnet.engine.trainer import Trainer

    sys.path.insert(0, str(REPO))
    import evaluate

    # Two training images (the step is not what is checked); four to validate in batches of 3: a full one and a
    # smaller last one.
    root = _synthetic_tree(tmp_path / "data", 2, 4)
    cfg = load_config(None, [*TINY, f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
                             "train.epochs=1", "train.batch_size=2", "train.val_half=true",
                             "train.val_batch_size=3", "train.val_workers=2", "train.device=cpu"])
    Trainer(cfg, show_progress=False).fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    best = next(h for h in reversed(history) if h["best"])
    assert evaluate.main(["--ckpt", str(tmp_path / "run" / "best.pth"), "--split", "DIS-VD", "--no_hce", "--half",
                          "--batch_size", "3", "--json", str(tmp_path / "eval.json")]) == 0
    reported = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert all(reported[k] == best[k] for k in ("maxF", "wF", "Sm", "meanEm", "MAE"))


def test_metric_workers_end_when_the_training_process_is_killed(tmp_path):
    """A SIGKILLed rank leaves no metric worker behind (an orphan would hold torchrun's output pipes open)."""
    import signal
    import subprocess
    import time

    code = ("import os, sys\nfrom pdfnet.workers import process_pool\n"
            "pool = process_pool(1)\nprint(pool.submit(os.getpid).result(), flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    worker = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"metric worker {worker} outlived its killed parent")


def test_the_trainer_compiles_the_model_and_the_loss(synthetic_root, tmp_path, monkeypatch):
    """Wiring of train.compile: the model's blocks compiled with the configured backend, and the loss compiled (the
    compiled blocks themselves train and validate under DDP in test_distributed_training)."""
    from pdfnet.engine import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "compile_for_training",
                        lambda model, scope, backend: calls.append(("model", scope, backend)) or model)
    monkeypatch.setattr(torch, "compile", lambda fn, backend: calls.append(("loss", type(fn).__name__, backend)) or fn)
    cfg = load_config(None, [*TINY, f"data.root={synthetic_root}", f"train.out_dir={tmp_path / 'run'}",
                             "train.compile=blocks", "train.compile_backend=aot_eager", "train.device=cpu"])
    trainer = trainer_module.Trainer(cfg, show_progress=False)
    assert calls[:2] == [("model", "blocks", "aot_eager"), ("loss", "PDFNetLoss", "aot_eager")]
    assert load_config(None, ["train.compile=true"]).train.compile == "model"  # the old boolean still works
    del trainer
