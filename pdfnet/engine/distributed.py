"""Process-group plumbing for ``torchrun``: one process per device, rank 0 writes files and logs.

Every collective here is entered by every rank, in the same order; a failure on one rank is shared with the others
(:func:`share_failure`) so that all of them stop with the same message instead of waiting in a collective until the
NCCL timeout.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..device import resolve_device

T = TypeVar("T")


class DistributedSetupError(RuntimeError):
    """The launch environment and the requested device do not fit together; the message says how to launch."""


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: str | None = None) -> int:
    value = os.environ.get(name, default)
    if value is None:
        raise DistributedSetupError(f"WORLD_SIZE > 1 but {name} is not set: start the processes with torchrun")
    try:
        return int(value)
    except ValueError as err:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from err


def elastic_restart_count() -> int:
    """How many times torchrun (``--max_restarts``) has restarted this worker group; 0 outside torchrun."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", "0")


def process_device(requested: torch.device, ctx: DistContext) -> torch.device:
    """The device this process trains on. Under torchrun a ``cuda`` request becomes ``cuda:<LOCAL_RANK>`` (an
    explicit ``cuda:N`` would put every process on the same GPU and is refused)."""
    if requested.type != "cuda":
        return requested
    if not ctx.enabled:
        return requested if requested.index is not None else torch.device("cuda", torch.cuda.current_device())
    if requested.index is not None:
        raise DistributedSetupError(
            f"device {str(requested)!r} under torchrun would put all {ctx.world_size} processes on one GPU: use "
            "'cuda' (process k takes cuda:LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES)")
    visible = torch.cuda.device_count()
    if ctx.local_rank >= visible:
        raise DistributedSetupError(
            f"LOCAL_RANK {ctx.local_rank} but only {visible} GPU(s) are visible on this node: start at most "
            f"{visible} process(es) per node (torchrun --nproc_per_node {visible})")
    return torch.device("cuda", ctx.local_rank)


def init_distributed(device_name: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment and pick this process's device.

    Order matters on CUDA: the rank's device ``cuda:<LOCAL_RANK>`` is made current first, then the group is joined
    with that indexed device (nccl binds its communicator to it); CPU processes use gloo. A plain ``python train.py``
    is a world of one and starts nothing. Returns (context, device).
    """
    requested = resolve_device(device_name)
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        ctx = DistContext()
        return ctx, process_device(requested, ctx)
    ctx = DistContext(_env_int("RANK"), world, _env_int("LOCAL_RANK", "0"))
    device = process_device(requested, ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        group = {"store": store, "rank": ctx.rank, "world_size": world} if (store := _attempt_store()) else {}
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device, **group)
        else:
            dist.init_process_group("gloo", **group)
    return ctx, device


def _attempt_store() -> dist.Store | None:
    """Under torchrun, the agent's store with a prefix of its own for this restart attempt (None elsewhere).

    After an elastic restart the agent's store still holds the previous attempt's keys, among them the dead
    workers' connection addresses: a new gloo/nccl group could read those, connect to a closed port and fail or
    hang (seen in 2 of 5 restarts on CPU). A per-attempt prefix makes every attempt meet only its own peers.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not os.environ.get("MASTER_PORT"):
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    return dist.PrefixStore(f"pdfnet/attempt_{elastic_restart_count()}", client)


DDP_BUCKET_MB = 100  # 4x DDP's default: fewer, larger all-reduces of the ~100M gradients (the same sums)


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """DDP for a training step whose graph is the same every step: ``static_graph`` (DDP learns the graph, and the
    parameters it leaves unused, in the first step instead of searching for them every step), gradients kept in
    the communication buckets (no copy), 100 MB buckets, no buffer broadcast (PDFNet's buffers are derived from the
    architecture and identical on every rank). Gradients equal torch's defaults bitwise (tests/ddp_settings_worker.py).
    Wrap a compiled module (or one with compiled blocks), not the other way round."""
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
        gradient_as_bucket_view=True, static_graph=True, bucket_cap_mb=DDP_BUCKET_MB)


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of a work list: items r, r+W, r+2W, ... (disjoint, deterministic, together complete)."""
    return list(items[ctx.rank::ctx.world_size])


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (a list of one without a process group)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(ctx: DistContext, flag: torch.Tensor) -> bool:
    """True when the 0-dim/1-element tensor ``flag`` is non-zero on any rank, so that all ranks take the same
    branch. One host sync (and one all-reduce under a process group)."""
    if ctx.enabled:
        flag = flag.detach().float().reshape(1).clone()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def share_failure(ctx: DistContext, error: BaseException | None) -> None:
    """Collective: when ``error`` is set on any rank, every rank raises it (the lowest failing rank's exception,
    with its message), so all processes stop together with the same explanation."""
    if not ctx.enabled:
        if error is not None:
            raise error
        return
    shared: Any = error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:  # an exception carrying unpicklable state still travels as its message
            shared = RuntimeError(f"{type(error).__name__}: {error}")
    failures = [e for e in gather_objects(ctx, shared) if e is not None]
    if error is not None:
        raise error
    if failures:
        raise failures[0]


def on_main(ctx: DistContext, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only (writing files, validating data); if it raises, every rank raises the same error.
    Returns fn's result on rank 0 and None elsewhere. Every rank must call it."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as err:
            error = err
    share_failure(ctx, error)
    return result


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
