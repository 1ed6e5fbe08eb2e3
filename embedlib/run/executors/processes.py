"""Run the compute step in worker processes, each with its own model replica; finish in this process.

    items (read + plan) --> N compute threads --> N processes --> N finish threads

This is the pipelined executor with each compute thread handing its items
to the process pool: only items (texts, ids, hashes) and what the step makes
of them (vectors) cross the process boundary, never a connection or a DSN,
so a run uses one connection to read and ``workers`` to write, whatever the
processes do. Each process gets ``cores / workers`` torch threads (or
``torch_threads``), so processes x threads never oversubscribe the cores
unless asked to. A process builds its step from the pickled factory at its
first item of a run, so a run with nothing to do starts no process and loads
no model. Processes are started with ``spawn``: forking a parent that
already runs torch's thread pools can deadlock.

Ctrl-C is the parent's to handle: worker processes ignore SIGINT, and the
parent lets the items they are running finish.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from embedlib.encode.torch_threads import limit_torch_threads
from embedlib.errors import ConfigError
from embedlib.run.executors.base import Stages, Step, T
from embedlib.run.executors.pipeline import PipelinedExecutor


class ProcessExecutor(PipelinedExecutor):
    """``workers`` processes; they are started at the first item and kept until ``shutdown()``.

    Kept, because a process takes seconds to start (importing torch, loading
    the model): an Ingestor made with an executor *name* shuts it down after
    each run, while an executor *instance* passed in stays warm across runs.
    """

    name = "process"

    def __init__(self, workers: int | None = None, *, torch_threads: int | None = None, depth: int = 2) -> None:
        cores = os.cpu_count() or 1
        super().__init__(cores if workers is None else workers, depth=depth, concurrent_compute=True)
        self.torch_threads = torch_threads or max(1, cores // self.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._runs = itertools.count()
        self._lock = threading.Lock()  # compute threads start the pool together

    def map_unordered(self, stages: Stages[T, Any, Any], items: Iterable[T]) -> Iterator[Any]:
        try:
            yield from super().map_unordered(stages, items)
        except BrokenProcessPool:
            self.shutdown()
            raise

    def compute_steps(self, stages: Stages[T, Any, Any]) -> Callable[[], Step[T, Any]]:
        try:
            task = functools.partial(_compute, next(self._runs), pickle.dumps(stages.compute))
        except Exception as exc:
            raise ConfigError(
                f"the process executor sends the model to each process, and it cannot be pickled ({exc}); "
                "pass a model name or path instead of a loaded object"
            ) from None
        return lambda: _InProcess(self._started_pool(), task)

    def _started_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_process,
                    initargs=(self.torch_threads,),
                )
            return self._pool

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # items already running finish


class _InProcess:
    """A compute thread's step: each item runs in one of the pool's processes."""

    def __init__(self, pool: ProcessPoolExecutor, task: Callable[[Any], Any]) -> None:
        self._pool = pool
        self._task = task

    def __call__(self, item: Any) -> Any:
        return self._pool.submit(self._task, item).result()

    def close(self) -> None:
        pass  # the processes stay up for the next run, until the executor's shutdown()


# State of a worker process: its torch thread count, and the step of the current run.
_torch_threads = 1
_run: int | None = None
_step: Step[Any, Any] | None = None


def _start_process(torch_threads: int) -> None:
    global _torch_threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_torch_threads(torch_threads)
    _torch_threads = torch_threads


def _compute(run: int, make_step: bytes, item: Any) -> Any:
    """Run one item, with this process's step for ``run`` (made at its first item)."""
    global _run, _step
    if _run != run:
        if _step is not None:
            _step.close()
        _run, _step = run, None
        # Made here rather than in the initializer, so that an error (a model
        # that cannot load) comes back as itself.
        _step = pickle.loads(make_step)()
        limit_torch_threads(_torch_threads)  # torch may have been imported just now
    assert _step is not None
    return _step(item)
