"""Checkpoint writes that do not stall training: a snapshot on the host, then the disk write in a background thread.

Training waits only for the copy (a GPU-to-host copy of the weights and the optimizer state, or a memory copy on a
CPU); serialising and writing 1.2 GB (the paper model's last.pth) happen while the next steps run. Writes stay atomic
(temp file + rename) and ordered (one thread), so a kill at any moment leaves the previous complete file, and a
resume reads exactly what a synchronous write would have written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


def snapshot(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) whose tensors are detached CPU copies: nothing in it changes
    when training goes on (optimizer steps update weights and moments in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class BackgroundWriter:
    """Runs write jobs one at a time, in order, in a background thread. ``submit(fn)`` returns at once; an error of a
    job is raised by the next ``submit`` or by ``wait``, so a failed write (disk full) is never silent."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfnet-writer")
        self._pending: list[Future] = []

    def _raise_failures(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def submit(self, job: Callable[[], object]) -> None:
        self._raise_failures()
        self._pending.append(self._pool.submit(job))

    def wait(self) -> None:
        """Block until every submitted write is on disk; raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
