"""Run batches in worker processes, each with its own model replica and database connection.

Each process gets ``cores / workers`` torch threads (or ``torch_threads``),
so processes x threads never oversubscribe the cores unless asked to. Only
batches (texts, ids, hashes) and results cross the process boundary: a
worker process builds its own worker (connection; the model is loaded once
per process) from the picklable factory at its first batch of a run, so a
run with nothing to do starts no process and loads no model. Processes are started with ``spawn``: forking a
parent that already runs torch's thread pools can deadlock.

Ctrl-C is the parent's to handle: worker processes ignore SIGINT, and the
parent lets the batches they are running finish and commit.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from embedlib.encode.local import limit_torch_threads
from embedlib.errors import ConfigError
from embedlib.plan.batching import Batch
from embedlib.run.executors.base import Executor, Worker, WorkerFactory, bounded_map
from embedlib.run.worker import BatchResult


class ProcessExecutor(Executor):
    """``workers`` processes; they are started at the first batch and kept until ``shutdown()``.

    Kept, because a process takes seconds to start (importing torch, loading
    the model): an Ingestor made with an executor *name* shuts it down after
    each run, while an executor *instance* passed in stays warm across runs.
    """

    name = "process"

    def __init__(self, workers: int | None = None, *, torch_threads: int | None = None) -> None:
        cores = os.cpu_count() or 1
        super().__init__(cores if workers is None else workers)
        workers = self.workers
        self.torch_threads = torch_threads or max(1, cores // workers)
        self._pool: ProcessPoolExecutor | None = None
        self._runs = itertools.count()

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        try:
            task = functools.partial(_run_batch, next(self._runs), pickle.dumps(make_worker))
        except Exception as exc:
            raise ConfigError(
                f"the process executor sends the model to each process, and it cannot be pickled ({exc}); "
                "pass a model name or path instead of a loaded object"
            ) from None
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return  # nothing to do: no process started
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process,
                initargs=(self.torch_threads,),
            )
        pool = self._pool
        try:
            yield from bounded_map(
                lambda batch: pool.submit(task, batch), itertools.chain([first], batches), 2 * self.workers
            )
        except BrokenProcessPool:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # batches already running finish and commit
            self._pool = None


# State of a worker process: its torch thread count, and the worker of the current run.
_torch_threads = 1
_run: int | None = None
_worker: Worker | None = None


def _start_process(torch_threads: int) -> None:
    global _torch_threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_torch_threads(torch_threads)
    _torch_threads = torch_threads


def _run_batch(run: int, make_worker: bytes, batch: Batch) -> BatchResult:
    """Run one batch, with this process's worker for ``run`` (made at its first batch)."""
    global _run, _worker
    if _run != run:
        if _worker is not None:
            _worker.close()
        _run, _worker = run, None
        # Made here rather than in the initializer, so that an error (a model
        # that cannot load, a refused connection) comes back as itself.
        _worker = pickle.loads(make_worker)()
        limit_torch_threads(_torch_threads)  # torch may have been imported just now
    assert _worker is not None
    return _worker(batch)
