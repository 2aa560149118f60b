"""One rank of a gloo group (tests/test_distributed_training.py starts two): one training step of the tiny model from
the same weights and batch with (a) torch's default DDP settings, (b) the trainer's (``wrap_ddp``), (c) the
trainer's on a model whose blocks are compiled (``train.compile=blocks``, eager backend, failing instead of falling
back to eager), then (rank 0) one validation forward of each. Writes every variant's gradients and validation logits to
``--report DIR/rank<R>.pt``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from pdfnet.build import build_loss, build_model  # noqa: E402
from pdfnet.config import load_config  # noqa: E402
from pdfnet.engine.compile import compile_for_training  # noqa: E402
from pdfnet.engine.distributed import init_distributed, shutdown, wrap_ddp  # noqa: E402
from pdfnet.engine.profiling import synthetic_batch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--report", type=Path, required=True)
    args = p.parse_args()
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # a region falling back to eager is an error here
    ctx, device = init_distributed("cpu")
    cfg = load_config(None, ["model.backbone=swin_tiny_test", "model.emb_dim=16", "model.drop_path=0",
                             "model.fusion_dropout=0", "model.impl=reference", "data.size=128"])
    data = synthetic_batch(1, 128, device, seed=ctx.rank)
    grads = {}
    for variant in ("torch_defaults", "trainer", "trainer_compiled_blocks"):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        loss_fn = build_loss(cfg)
        if variant == "torch_defaults":
            wrapped = DistributedDataParallel(model, find_unused_parameters=True)  # depth head: part unused below
        elif variant == "trainer":
            wrapped = wrap_ddp(model, device)
        else:
            wrapped = wrap_ddp(compile_for_training(model, "blocks", "eager"), device)
        for _ in range(2):  # static_graph learns the graph in the first step: compare the second
            model.zero_grad()
            seg = wrapped(data["image"], data["depth"])
            loss_fn(seg, data["mask"], data["depth_target"])[0].backward()
        grads[variant] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if ctx.rank == 0:  # validation mode (no DDP; the ranks alike): the compiled blocks' other variants, still
            with torch.no_grad():  # no eager fallback
                grads[variant]["eval_logits"] = wrapped.module.eval()(data["image"], data["depth"])[0]
    torch.save(grads, args.report / f"rank{ctx.rank}.pt")
    shutdown(ctx)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
