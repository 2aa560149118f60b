"""The GPU path, measured without a GPU: ops per training step on fake (meta-storage) tensors, graph breaks under
torch._dynamo.explain, graphs that do not grow with the input size, and a compiled training step on CPU."""

from __future__ import annotations

import pytest
import torch

from pdfnet.build import build_loss, build_model
from pdfnet.config import Config, load_config
from pdfnet.engine.profiling import count_training_ops, synthetic_batch


def _tiny(impl: str = "reference", size: int = 256) -> Config:
    return load_config(None, ["model.backbone=swin_tiny_test", "model.emb_dim=16", f"data.size={size}",
                              f"model.impl={impl}", "train.amp=bf16"])


def test_a_paper_model_training_step_is_under_10k_ops():
    """The issue's target: forward + PDFNetLoss + backward of the paper model at 1024², batch 2, bf16 autocast, in
    what model.impl=auto builds for a GPU (the reference model), under 10,000 ops (the CPU forms: ~126,000)."""
    ops = count_training_ops(load_config(None, ["data.size=1024", "train.amp=bf16"]), 2)
    assert sum(ops.values()) <= 10_000, sum(ops.values())
    assert ops.get("aten._to_copy.default", 0) > 0  # bf16 autocast's casts are dispatched and counted


def test_op_counts_do_not_grow_with_resolution_on_the_gpu_path():
    """The reference model's count is the same at 128² and 256² (within 5 %; resizes to an equal size are skipped,
    which differs by a few ops between sizes). (The lean CPU path loops over chunks of rows, so its count grows with
    the input: that is why GPUs do not run it; `scripts/count_ops.py --impl lean` shows it.) Counted on real float32
    tensors: the tiny model computes faster than fake tensors dispatch (bf16 autocast's casts are counted at paper
    size above)."""
    counts = {}
    for size in (128, 256):
        cfg = _tiny("reference", size)
        cfg.train.amp = "none"
        counts[size] = sum(count_training_ops(cfg, 1, fake=False).values())
    assert abs(counts[256] - counts[128]) <= 0.05 * counts[256], counts
    assert counts[128] > 1000


def _explain(fn, *args, **kwargs):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args, **kwargs)


def _nodes(explained) -> int:
    return sum(len(g.graph.nodes) for g in explained.graphs)


@pytest.mark.parametrize("impl", ["reference", "lean"])
def test_no_graph_breaks_and_graphs_that_do_not_grow_with_resolution(impl):
    """Zero graph breaks in the forward (eval and train mode) and in PDFNetLoss, on every path model.impl offers
    (the lean forms take their reference forms under compile; the CPU-capability query that broke the graph 17
    times is decided when the model is made lean, not per call). The traced forward has the same size at 128² and
    256², within 1 % (no Python loop whose trip count depends on the input size), counted as the ops it runs."""
    cfg = _tiny(impl, size=128)
    model = build_model(cfg)
    data = synthetic_batch(1, 128, torch.device("cpu"))
    if impl == "lean":
        # Training (the reference model's training forward and loss compile with fullgraph=True in the slow test
        # below); under compile the lean inference forms are the reference forms, traced for the reference here.
        model.train()
        explained = _explain(model, data["image"], data["depth"], return_depth=True)
        assert explained.graph_break_count == 0, explained.break_reasons
        seg, dep = model(data["image"], data["depth"], return_depth=True)
        explained = _explain(build_loss(cfg), [s.detach() for s in seg], data["mask"], data["depth_target"],
                             [d.detach() for d in dep])
        assert explained.graph_break_count == 0, explained.break_reasons
        return
    with torch.no_grad():
        explained = _explain(model.eval(), data["image"], data["depth"])
    assert explained.graph_break_count == 0, explained.break_reasons
    # The graph's size: the forward's op count at two sizes, run eagerly (what dynamo records is these ops; tracing
    # again at 256² would cost ~12 s more of the suite for the same answer).
    ops = {size: _eager_ops(model, synthetic_batch(1, size, torch.device("cpu"))) for size in (128, 256)}
    assert abs(ops[256] - ops[128]) <= 0.01 * ops[256], ops
    assert abs(_nodes(explained) - ops[128]) <= 0.5 * ops[128], (_nodes(explained), ops[128])


def _eager_ops(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> int:
    """aten ops dispatched by one no-grad forward of ``model``, views included (dynamo records those too)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        model(data["image"], data["depth"])
    return Count.n


@pytest.mark.slow
def test_a_whole_training_step_compiles_and_gives_the_eager_loss():
    """Model and loss compiled for a training step: dynamo captures each as one graph and AOTAutograd builds and
    partitions the joint forward/backward graph (the ``aot_eager`` backend: everything inductor receives, without
    its C++ code generation). The same step with inductor's C++ kernels takes ~550 s to compile on a 2-core CPU
    (556 kernels, measured 2026-12-07), too long for the suite; the GPU benchmark compiles it with inductor."""
    cfg = _tiny("reference", size=128)
    cfg.model.drop_path = cfg.model.fusion_dropout = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loss_fn = build_loss(cfg)
    data = synthetic_batch(1, 128, torch.device("cpu"))

    def step(forward, loss) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        seg, dep = forward(data["image"], data["depth"], return_depth=True)
        total, _ = loss(seg, data["mask"], data["depth_target"], dep)
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager_loss, eager_grads = step(model, loss_fn)
    torch._dynamo.reset()
    compiled_loss, compiled_grads = step(torch.compile(model, backend="aot_eager", fullgraph=True),
                                         torch.compile(loss_fn, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
