"""Run batches in worker processes, each with its own model replica and database connection.

Each process gets ``cores / workers`` torch threads (or ``torch_threads``),
so processes x threads never oversubscribe the cores unless asked to. Only
batches (texts, ids, hashes) and results cross the process boundary: a
worker process builds its own worker (model and connection) from the
picklable factory at its first batch, so a run with nothing to do starts no
process and loads no model. Processes are started with ``spawn``: forking a
parent that already runs torch's thread pools can deadlock.

Ctrl-C is the parent's to handle: worker processes ignore SIGINT, and the
parent lets the batches they are running finish and commit.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.util import Finalize

from embedlib.batching import Batch
from embedlib.encoder import limit_torch_threads
from embedlib.errors import ConfigError
from embedlib.executors.base import Executor, Worker, WorkerFactory, bounded_map
from embedlib.worker import BatchResult


class ProcessExecutor(Executor):
    name = "process"

    def __init__(self, workers: int = 1, *, torch_threads: int | None = None) -> None:
        super().__init__(workers)
        cores = os.cpu_count() or 1
        self.torch_threads = torch_threads or max(1, cores // workers)

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        try:
            pickle.dumps(make_worker)
        except Exception as exc:
            raise ConfigError(
                f"the process executor sends the model to each process, and it cannot be pickled ({exc}); "
                "pass a model name or path instead of a loaded object"
            ) from None
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(make_worker, self.torch_threads),
        )
        try:
            yield from bounded_map(lambda batch: pool.submit(_run_batch, batch), batches, 2 * self.workers)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # batches already running finish and commit


# State of a worker process (one per process, set by its initializer).
_make_worker: WorkerFactory | None = None
_torch_threads = 1
_worker: Worker | None = None


def _start_process(make_worker: WorkerFactory, torch_threads: int) -> None:
    global _make_worker, _torch_threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_torch_threads(torch_threads)
    _make_worker, _torch_threads = make_worker, torch_threads


def _run_batch(batch: Batch) -> BatchResult:
    global _worker
    if _worker is None:
        assert _make_worker is not None, "set by _start_process"
        # Made here rather than in the initializer, so that an error (a model
        # that cannot load, a refused connection) comes back as itself.
        _worker = _make_worker()
        limit_torch_threads(_torch_threads)  # torch may have been imported just now
        Finalize(_worker, _worker.close, exitpriority=10)
    return _worker(batch)
