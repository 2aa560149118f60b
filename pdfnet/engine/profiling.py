"""Measuring training: the time, peak memory and bytes saved for backward of real training steps (forward,
PDFNetLoss, backward, AdamW step). Used by ``scripts/benchmark_training.py`` and ``scripts/gpu_selfcheck.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..build import build_loss, build_model
from ..config import Config
from ..device import training_amp_dtype
from .compile import compile_for_training
from .optim import make_optimizer

MIB = 2**20


class SavedTensorMeter:
    """Bytes autograd keeps for backward while active: every tensor packed by the graph, counted once per storage
    (views and re-saved tensors share one); the model's parameters (and views of them) are not counted: they
    exist anyway. ``by_module`` attributes the bytes to the top-level child running when they were saved
    (``backbone``, ``decoder``, ...)."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        self.storages: dict[tuple[torch.device, int], int] = {}
        self._params = set()
        if model is not None:
            self._params = {(p.device, p.untyped_storage().data_ptr()) for p in model.parameters()}
        self.by_module: dict[str, int] = {}
        self._current = ["other"]
        self._hooks = []
        if model is not None:
            for name, child in model.named_children():
                self._hooks.append(child.register_forward_pre_hook(lambda *_, n=name: self._enter(n)))
                self._hooks.append(child.register_forward_hook(lambda *_: self._leave()))

    def _enter(self, name: str) -> None:
        self._current.append(name)

    def _leave(self) -> None:
        self._current.pop()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            key = (tensor.device, storage.data_ptr())
            if key not in self.storages and key not in self._params:
                self.storages[key] = storage.nbytes()
                self.by_module[self._current[-1]] = self.by_module.get(self._current[-1], 0) + storage.nbytes()
        return tensor

    @property
    def total_bytes(self) -> int:
        return sum(self.storages.values())

    @contextlib.contextmanager
    def active(self) -> Iterator[SavedTensorMeter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def _read_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's max-allocated counter, or on CPU the process's peak RSS (Linux ``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    """Peak since :func:`reset_peak_memory`: CUDA max allocated, or CPU peak resident set size, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return _read_status_kib("VmHWM") / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _register_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the CUDA attention kernels but not the CPU flash kernel SDPA dispatches to;
    without this, every attention of the model would count as zero FLOPs on CPU."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op.default in flop_registry or op in flop_registry:
        return

    @register_flop_formula(op)
    def _cpu_flash_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` (matmuls, convolutions, attention; a multiply-add = 2), as
    ``torch.utils.flop_counter`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096,
                       repeats: int = 5) -> float:
    """What this device sustains on a large square ``torch.mm`` in ``dtype`` (best of ``repeats``), in GFLOP/s:
    the practical ceiling a model's matmul/conv-bound work can be compared with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


@dataclasses.dataclass
class TrainingStepResult:
    step_s: float  # median seconds per step (after the warm-up)
    peak_mib: float  # CUDA: max allocated during a step; CPU: peak RSS of the process during a step
    saved_for_backward_mib: float
    saved_by_module_mib: dict[str, float]
    device: str
    size: int
    batch: int
    amp: str
    grad_checkpointing: str
    steps: int
    losses: list[float]


def synthetic_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic DIS-like batch: a disc-and-bar mask, an image and depth correlated with it."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = ((xx**2 + yy**2 < 0.3) | (xx.abs() < 0.02)).float()[None, None].expand(batch, 1, -1, -1).contiguous()
    image = torch.randn(batch, 3, size, size, generator=g) * 0.5 + mask * 1.5
    depth = (0.3 + 0.5 * mask + 0.05 * torch.rand(batch, 1, size, size, generator=g)).clamp(0, 1)
    return {k: v.to(device) for k, v in {"image": image, "depth": depth, "mask": mask, "depth_target": depth}.items()}


def training_step(forward: Callable, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler, data: dict[str, torch.Tensor], amp_dtype: torch.dtype | None,
                  want_depth: bool, context: contextlib.AbstractContextManager | None = None,
                  after_backward: Callable[[], None] | None = None) -> torch.Tensor:
    """One plain training step on ``data`` (a :func:`synthetic_batch`): forward (under ``amp_dtype`` autocast) and
    loss inside ``context`` (e.g. a saved-tensor meter), backward through ``scaler``, optimizer step. ``forward`` is
    the model, compiled or DDP-wrapped; ``after_backward`` runs between backward and the optimizer step (to read the
    gradients). Returns the detached loss. (The trainer's step adds accumulation and the
    non-finite policy; this one serves the benchmarks and the self-check.)"""
    autocast = torch.autocast(data["image"].device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with context or contextlib.nullcontext():
        with autocast:
            out = forward(data["image"], data["depth"], return_depth=want_depth)
        seg, dep = out if want_depth else (out, None)
        total, _ = loss_fn(seg, data["mask"], data["depth_target"], dep)
    del out, seg, dep
    scaler.scale(total).backward()
    if after_backward is not None:
        after_backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total.detach()


def time_steps(step: Callable[[int], float], device: torch.device, steps: int, warmup: int = 1
               ) -> tuple[float, float, list[float]]:
    """Call ``step(i)`` (one training step returning its loss) ``warmup + steps`` times; returns the median seconds
    of the timed steps, the highest peak memory of a timed step in MiB (see :func:`peak_memory_mib`) and every
    step's loss."""
    times, peaks, losses = [], [], []
    for i in range(warmup + steps):
        synchronize(device)
        reset_peak_memory(device)
        started = time.perf_counter()
        losses.append(step(i))
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
            peaks.append(peak_memory_mib(device))
    return statistics.median(times), max(peaks), losses


def measure_training_steps(cfg: Config, device: torch.device, batch: int, steps: int = 3, warmup: int = 1,
                           seed: int = 0, compile_backend: str | None = None, model: torch.nn.Module | None = None,
                           data: dict[str, torch.Tensor] | None = None,
                           on_first_gradients: Callable[[torch.nn.Module], None] | None = None) -> TrainingStepResult:
    """Build ``cfg.model`` (random init) unless ``model`` is given, then run ``warmup + steps`` real training steps
    on one batch (``data``, default a :func:`synthetic_batch` of ``cfg.data.size``²) under ``cfg.train.amp`` (and
    ``torch.compile`` when ``cfg.train.compile``); the bytes saved for backward are counted on the first step, and
    ``on_first_gradients(model)`` sees the first step's gradients before the optimizer uses them."""
    torch.manual_seed(seed)
    model = (model if model is not None else build_model(cfg, device)).to(device).train()
    backend = compile_backend or cfg.train.compile_backend
    forward = compile_for_training(model, cfg.train.compile, backend)
    want_depth = model.has_depth_head and cfg.loss.depth_weight > 0
    loss_fn = build_loss(cfg, device)
    if cfg.train.compile != "none":
        loss_fn = torch.compile(loss_fn, backend=backend)
    optimizer = make_optimizer(model, cfg.optim, device)
    amp_dtype = training_amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if data is None:
        data = synthetic_batch(batch, cfg.data.size, device, seed)
    data = {k: v.to(device) for k, v in data.items()}

    def step(i: int) -> float:
        # Saved-tensor hooks and torch.compile do not mix: compiled runs report no saved bytes (0).
        context = meter.active() if i == 0 and cfg.train.compile == "none" else contextlib.nullcontext()
        inspect = (lambda: on_first_gradients(model)) if i == 0 and on_first_gradients else None
        return float(training_step(forward, loss_fn, optimizer, scaler, data, amp_dtype, want_depth, context,
                                   inspect))

    meter = SavedTensorMeter(model)
    step_s, peak, losses = time_steps(step, device, steps, warmup)
    meter.close()
    return TrainingStepResult(
        step_s=step_s, peak_mib=peak, saved_for_backward_mib=meter.total_bytes / MIB,
        saved_by_module_mib={k: v / MIB for k, v in sorted(meter.by_module.items())}, device=str(device),
        size=int(data["image"].shape[-1]), batch=int(data["image"].shape[0]), amp=cfg.train.amp,
        grad_checkpointing=cfg.model.grad_checkpointing,
        steps=steps, losses=losses)


# Ops that launch no kernel on a GPU besides views: allocations and reinterpretations of existing storage.
NO_KERNEL_OPS = frozenset({"aten._unsafe_view.default", "aten.empty.memory_format", "aten.empty_like.default",
                           "aten.new_empty.default", "aten.new_empty_strided.default", "aten.empty_strided.default",
                           "aten.lift_fresh.default"})


def count_training_ops(cfg: Config, batch: int, impl: str | None = None,
                       progress: Callable[[str], None] | None = None, fake: bool = True) -> dict[str, int]:
    """{aten op: calls} of one training step's forward, PDFNetLoss and backward at ``cfg.data.size``², batch
    ``batch``, under ``cfg.train.amp`` autocast: every aten op dispatched except views and allocations (on a GPU,
    about one kernel launch each; ``prim`` metadata queries are not ops). Shapes only, no arithmetic: tensors are
    fake (meta storage) on the CPU device type, so that CPU autocast's casts are dispatched and counted as they
    would be on a GPU. ``impl``: the model
    implementation (default: what ``model.impl`` picks for the meta device, i.e. the GPU path). ``fake=False``:
    real tensors instead (the same ops are dispatched; for small models and sizes it is faster than fake ones, which
    cost ~1.5 ms per op on a CPU)."""
    import collections
    import copy

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    from ..build import resolve_impl
    from ..losses import PDFNetLoss
    from ..models import PDFNet
    from ..models.pdfnet import parameters_on_meta
    from ..registry import IMPLEMENTATIONS

    counts: collections.Counter[str] = collections.Counter()

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if name.startswith("aten.") and not func.is_view and name not in NO_KERNEL_OPS:
                counts[name] += 1
            return func(*args, **(kwargs or {}))

    cfg = copy.deepcopy(cfg)
    cfg.model.impl = impl or resolve_impl(cfg.model.impl, "meta")
    cfg.model.pretrained = ""
    device = torch.device("cpu")
    amp_dtype = training_amp_dtype(device, cfg.train.amp)
    if progress:
        progress("building the model" + (" (no initialisation: parameters on meta, then fake storage)" if fake else ""))
    with parameters_on_meta() if fake else contextlib.nullcontext():
        model = IMPLEMENTATIONS.get(cfg.model.impl)(PDFNet.from_config(cfg.model)).train()
    loss_fn = IMPLEMENTATIONS.get(cfg.model.impl)(PDFNetLoss.from_config(cfg))
    # fake: real inputs are only to_empty's templates
    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        if fake:
            model.to_empty(device=device)
            loss_fn.to_empty(device=device)
        data = synthetic_batch(batch, cfg.data.size, device)
        want_depth = model.has_depth_head and cfg.loss.depth_weight > 0
        if progress:
            progress("counting forward + loss + backward")
        with Counter():
            with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(data["image"], data["depth"], return_depth=want_depth)
            seg, dep = out if want_depth else (out, None)
            total, _ = loss_fn(seg, data["mask"], data["depth_target"], dep)
            total.backward()
    return dict(counts.most_common())
