"""One rank of a hand-launched gloo process group (tests/test_distributed_training.py starts two of these with
RANK/WORLD_SIZE/MASTER_* set, as torchrun would). Trains the tiny config given on the command line; with
``--poison RANK:CALL`` that rank's CALL-th micro-batch gets a NaN loss; writes the final weights and facts about the
run to ``--report DIR/rank<R>.pt``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pdfnet.config import load_config  # noqa: E402
from pdfnet.engine.trainer import Trainer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--opt", action="append", default=[])
    p.add_argument("--poison", default="")
    p.add_argument("--report", type=Path, required=True)
    args = p.parse_args()
    rank = int(os.environ["RANK"])
    trainer = Trainer(load_config(None, args.opt), show_progress=False)
    if args.poison:
        poison_rank, poison_call = (int(x) for x in args.poison.split(":"))
        forward, calls = trainer._forward_loss, {"n": 0}

        def poisoned(batch):
            total, parts = forward(batch)
            calls["n"] += 1
            if rank == poison_rank and calls["n"] == poison_call:
                total = total * float("nan")
            return total, parts

        trainer._forward_loss = poisoned
    broadcast_buffers = getattr(trainer.train_model, "broadcast_buffers", None)
    state = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "skipped": state.skipped, "step": state.step,
                "broadcast_buffers": broadcast_buffers}, args.report / f"rank{rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
