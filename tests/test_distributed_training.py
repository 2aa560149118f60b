"""Multi-process and mixed-precision training paths on CPU: two gloo processes launched as torchrun would (RANK,
WORLD_SIZE, MASTER_* in the environment), fp16 loss scaling with GradScaler on CPU, and the host syncs of the loop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from test_train import TINY, _cli_opts, _poison_second_batch, tiny_config

from conftest import REPO
from pdfnet.engine import distributed
from pdfnet.engine.checkpoint import load_checkpoint
from pdfnet.engine.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cmd: list[str], world: int = 2, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Start ``world`` copies of ``cmd`` as ranks of one gloo group; wait for all of them."""
    port, procs = _free_port(), []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    deadline = time.time() + timeout
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return done


@pytest.mark.slow
def test_ranks_agree_to_skip_a_non_finite_group_and_stay_identical(synthetic_root, tmp_path):
    """Rank 1's loss is NaN on the last micro-batch of an accumulation group (rank 0's is finite): every rank
    drops that group, so the replicas never drift apart."""
    opts = []
    for text in [*TINY, f"data.root={synthetic_root}", f"train.out_dir={tmp_path / 'run'}", "train.epochs=1",
                 "train.batch_size=1", "train.accum_steps=2", "train.on_nonfinite=skip", "data.val_split=''",
                 "model.depth_head=false"]:
        opts += ["--opt", text]
    results = _launch([sys.executable, str(REPO / "tests" / "ddp_worker.py"), *opts, "--poison", "1:2",
                       "--report", str(tmp_path)])
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["skipped"] == rank1["skipped"] == 2 and rank0["step"] == 2  # one group of 2 dropped, 1 taken
    assert rank0["broadcast_buffers"] is False
    different = [k for k in rank0["model"] if not torch.equal(rank0["model"][k], rank1["model"][k])]
    assert not different, f"replicas drifted: {different[:3]}"
    saved = load_checkpoint(tmp_path / "run" / "last.pth")["model"]  # written by rank 0 from the same weights
    assert all(torch.equal(saved[k], v) for k, v in rank0["model"].items())


@pytest.mark.slow
def test_a_bad_file_stops_every_rank_with_the_message(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    bad = sorted((root / "DIS-TR" / "im").iterdir())[3]
    bad.write_bytes(b"not an image")
    started = time.time()
    results = _launch([sys.executable, str(REPO / "train.py"), "--no_progress",
                       *_cli_opts(root, tmp_path / "run", "train.epochs=1")], timeout=120)
    assert time.time() - started < 90
    for rank, r in enumerate(results):
        assert r.returncode == 2, (rank, r.stderr[-2000:])
        assert f"unreadable image {bad}" in r.stderr and "Traceback" not in r.stderr, (rank, r.stderr[-2000:])
    assert not (tmp_path / "run").exists()  # validated before anything was written


def test_failures_on_rank_zero_reach_every_rank_without_a_group():
    ctx = distributed.DistContext()
    assert distributed.on_main(ctx, lambda: 42) == 42
    with pytest.raises(ValueError, match="boom"):
        distributed.on_main(ctx, lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_fp16_loss_scaling_with_a_skipped_batch_on_cpu(synthetic_root, tmp_path):
    """train.amp=fp16 uses a GradScaler (it runs on CPU too); a batch skipped for a non-finite loss must not make
    scaler.step see an optimizer without inf checks."""
    cfg = tiny_config(synthetic_root, tmp_path / "fp16", "train.epochs=1", "train.amp=fp16",
                      "train.on_nonfinite=skip", "data.val_split=''")
    trainer = Trainer(cfg, show_progress=False)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    _poison_second_batch(trainer)
    state = trainer.fit()
    assert state.skipped == 1 and state.step == 4
    ckpt = load_checkpoint(tmp_path / "fp16" / "last.pth")
    assert ckpt["scaler"]["scale"] > 0 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_resuming_with_another_amp_starts_or_drops_the_loss_scale_and_says_so(two_image_root, tmp_path):
    one_step = ("data.val_split=''", "train.batch_size=2")  # one optimizer step per epoch
    plain = tiny_config(two_image_root, tmp_path / "plain", "train.epochs=1", *one_step)
    Trainer(plain, show_progress=False).fit()
    to_fp16 = tiny_config(two_image_root, tmp_path / "plain", "train.epochs=2", "train.amp=fp16", *one_step)
    trainer = Trainer(to_fp16, resume=tmp_path / "plain" / "last.pth", show_progress=False)
    trainer.fit()
    log = (tmp_path / "plain" / "train.log").read_text()
    assert "trained without fp16 loss scaling: starting a fresh loss scale" in log
    back = tiny_config(two_image_root, tmp_path / "plain", "train.epochs=3", *one_step)
    Trainer(back, resume=tmp_path / "plain" / "last.pth", show_progress=False).fit()
    assert "the stored loss scale is dropped" in (tmp_path / "plain" / "train.log").read_text()


def test_the_training_loop_syncs_with_the_host_once_per_optimizer_step(synthetic_root, tmp_path, monkeypatch):
    cfg = tiny_config(synthetic_root, tmp_path / "sync", "train.epochs=1", "train.batch_size=1",
                      "train.accum_steps=2", "train.log_every_steps=1000", "data.val_split=''",
                      "model.depth_head=false")
    trainer = Trainer(cfg, show_progress=False)
    syncs = {"n": 0}
    loop_files = ("engine/trainer.py", "engine/distributed.py")
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            # The loop's own reads of tensor values (data loading and the optimizer are not the loop's).
            if sys._getframe(1).f_code.co_filename.endswith(loop_files):
                syncs["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.train_epoch()
    monkeypatch.undo()
    assert trainer.state.step == 4 and syncs["n"] == trainer.state.step, syncs  # 8 micro-batches, 4 steps


def test_bf16_autocast_trains_on_cpu_and_the_log_says_so(two_image_root, tmp_path):
    cfg = tiny_config(two_image_root, tmp_path / "amp", "train.epochs=1", "train.amp=bf16", "data.val_split=''",
                      "train.batch_size=2")
    trainer = Trainer(cfg, show_progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    trainer.fit()
    assert "amp=bf16" in (tmp_path / "amp" / "train.log").read_text()
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "amp" / "last.pth")["model"].values())


@pytest.mark.slow
def test_ddp_settings_and_compiled_blocks_give_the_default_gradients_bitwise(tmp_path):
    """The trainer's DDP (static graph, gradients in 100 MB buckets, no buffer broadcast) gives torch's default DDP
    gradients bit for bit, and so does it on a model whose blocks are compiled before wrapping, in training and then in
    validation on rank 0 (no region falls back to eager: the worker makes that an error). Two gloo processes."""
    results = _launch([sys.executable, str(REPO / "tests" / "ddp_settings_worker.py"), "--report", str(tmp_path)],
                      timeout=480)  # dynamo traces every compiled variant: ~1 min on 2 busy cores
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        reference = grads["torch_defaults"]
        assert reference and reference.keys() == grads["trainer"].keys() == grads["trainer_compiled_blocks"].keys()
        assert ("eval_logits" in reference) == (rank == 0)
        for variant in ("trainer", "trainer_compiled_blocks"):
            different = [n for n, g in reference.items() if not torch.equal(g, grads[variant][n])]
            assert not different, (variant, different[:3])
