"""Helper processes that end with the process that started them.

A process killed with SIGKILL runs no clean-up, and its children would live on: DataLoader workers blocked on a full
pipe, metric workers holding a launcher's output open. Each child started here watches its parent and exits when it
is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def exit_with_parent(parent: int) -> None:
    """In a child process: exit as soon as process ``parent`` is no longer this one's parent (it died; the child
    was re-parented). A daemon thread, so that it works while the main thread is blocked (e.g. on a pipe write)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="pdfnet-parent-watch").start()


def loader_worker_init(worker_id: int, then: Callable[[int], None] | None = None) -> None:
    """DataLoader ``worker_init_fn``: the worker exits with the main process; then ``then(worker_id)`` (e.g. seeding;
    bind it with functools.partial)."""
    exit_with_parent(os.getppid())
    if then is not None:
        then(worker_id)


def process_pool(workers: int) -> ProcessPoolExecutor | None:
    """``workers`` ``spawn``ed processes (a forked CUDA process is unsafe) that end with this one; None for 0."""
    if workers <= 0:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
