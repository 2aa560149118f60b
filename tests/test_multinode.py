"""Beyond one process, with the real launcher: two torchrun "nodes" on this machine, an elastic restart after a
worker is killed, and sharded depth preparation and evaluation — each compared bitwise with the plain run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import _assert_bitwise_equal, _cli_opts, _weights

from conftest import REPO
from pdfnet.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _history(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "val_seconds"} for line in lines]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_two_nodes_equal_one_node_with_an_elastic_restart(synthetic_root, tmp_path):
    """2 epochs, 2 processes: (a) one node under --max_restarts 1 with a worker SIGKILLed during epoch 2;
    (b) two torchrun launchers (--nnodes 2, --node_rank 0/1) on 127.0.0.1. Same weights, same history. (Neither is
    compared with an uninterrupted one-node run: a fault in the restart and one in the two-node rendezvous would not
    give the same weights; tests/test_train.py checks two processes against one.)"""
    def opts(name: str) -> list[str]:  # batches of 1: 4 steps an epoch, 4 checkpoints of epoch 2 to catch
        return _cli_opts(synthetic_root, tmp_path / name, "train.epochs=2", "train.save_every_steps=1",
                         "train.batch_size=1")

    train = [str(REPO / "train.py"), "--no_progress"]
    # (a) SIGKILL one worker once a checkpoint of epoch 2 exists (its start or its middle, as the host's load
    # allows); torchrun restarts the group, which resumes last.pth by itself.
    run = tmp_path / "elastic"
    agent = subprocess.Popen(_torchrun("--standalone", "--nproc_per_node", "2", "--max_restarts", "1",
                                       *train, *opts("elastic")),
                             cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, seen = None, None
    try:
        deadline = time.time() + 240
        while killed is None and agent.poll() is None and time.time() < deadline:
            try:
                st = os.stat(run / "last.pth")
                if (st.st_ino, st.st_mtime_ns) != seen:
                    seen = (st.st_ino, st.st_mtime_ns)
                    # mmap: only the header is read, so that a busy host still sees each checkpoint of epoch 2
                    state = torch.load(run / "last.pth", weights_only=True, mmap=True)["state"]
                    workers = _children(agent.pid)
                    if state["epoch"] == 1 and len(workers) == 2:
                        killed = workers[-1]
                        os.kill(killed, signal.SIGKILL)
            except (FileNotFoundError, RuntimeError, KeyError):
                pass  # not written yet, or being replaced
            time.sleep(0.01)
        try:
            output, _ = agent.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            agent.kill()
            pytest.fail("the restarted group did not finish in 300 s:\n" + agent.communicate()[0][-3000:])
    finally:
        if agent.poll() is None:
            agent.kill()
    assert killed is not None, "training ended before a checkpoint of epoch 2 was seen"
    assert agent.returncode == 0, output[-3000:]
    assert "torchrun restart 1: resuming" in output
    ckpt = load_checkpoint(run / "last.pth")
    assert ckpt["world_size"] == 2 and ckpt["state"]["epoch"] == 2

    # (b)
    port = _free_port()
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                                        "--master_addr", "127.0.0.1", "--master_port", str(port),
                                        *train, *opts("two_nodes")),
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    _assert_bitwise_equal(_weights(run / "last.pth"), _weights(tmp_path / "two_nodes" / "last.pth"))
    assert _history(tmp_path / "two_nodes") == _history(run)
    assert len(_history(run)) == 3  # validation before training and after each epoch


def _copy_images(synthetic_root: Path, dest: Path) -> None:
    for split, count in (("DIS-TR", 7), ("DIS-VD", 2)):  # odd totals: shards of unequal size
        images = sorted((synthetic_root / split / "im").iterdir())[:count]
        (dest / split / "im").mkdir(parents=True)
        for path in images:
            shutil.copy(path, dest / split / "im" / path.name)


def test_sharded_depth_maps_equal_one_process_and_failures_are_reported_once(synthetic_root, tiny_depth_model,
                                                                          tmp_path):
    from pdfnet.cli import main

    one, two = tmp_path / "one", tmp_path / "two"
    _copy_images(synthetic_root, one)
    _copy_images(synthetic_root, two)
    # sorts after every good image, so the batches of good images are those of the one-process run
    (two / "DIS-VD" / "im" / "zz_broken.jpg").write_bytes(b"not an image")
    args = ["--splits", "DIS-TR", "DIS-VD", "--model", str(tiny_depth_model), "--device", "cpu", "--batch_size", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (OMP_NUM_THREADS=1): the thread count changes conv rounding
    try:
        assert main(["depth", "--data_root", str(one), *args]) == 0
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.run(_torchrun("--standalone", "--nproc_per_node", "2", str(REPO / "scripts" / "prepare_depth.py"),
                                    "--data_root", str(two), *args),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    # The broken image: reported once (by rank 0), a non-zero exit, every other map written and byte-identical.
    assert proc.returncode != 0
    assert proc.stderr.count("zz_broken.jpg") == 1, proc.stderr[-3000:]
    for split in ("DIS-TR", "DIS-VD"):
        maps = sorted(p.name for p in (one / split / "depth").iterdir())
        assert maps == sorted(p.name for p in (two / split / "depth").iterdir()) and len(maps) > 0
        for name in maps:
            assert (one / split / "depth" / name).read_bytes() == (two / split / "depth" / name).read_bytes(), name


def test_sharded_evaluation_equals_one_process(synthetic_root, tiny_checkpoint, tmp_path):
    from pdfnet.cli import main

    root = tmp_path / "data"
    for kind in ("im", "gt", "depth"):  # 7 + 2 scenes as one split: 9 images, shards of 5 and 4
        for split, count in (("DIS-TR", 7), ("DIS-VD", 2)):
            (root / "DIS-VD" / kind).mkdir(parents=True, exist_ok=True)
            for path in sorted((synthetic_root / split / kind).iterdir())[:count]:
                shutil.copy(path, root / "DIS-VD" / kind / path.name)
    common = ["--ckpt", str(tiny_checkpoint), "--split", "DIS-VD", "--data_root", str(root), "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (OMP_NUM_THREADS=1)
    try:
        assert main(["eval", *common, "--json", str(tmp_path / "one.json"), "--save_dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.run(_torchrun("--standalone", "--nproc_per_node", "2", str(REPO / "evaluate.py"), *common,
                                    "--json", str(tmp_path / "two.json"), "--save_dir", str(tmp_path / "two")),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("dataset  method") == 1  # one table, from rank 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one == two and one["n_images"] == 9  # unrounded floats and per-image values: bitwise equal
    saved = sorted(p.name for p in (tmp_path / "one" / "DIS-VD").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "two" / "DIS-VD").iterdir()) and len(saved) == 9
