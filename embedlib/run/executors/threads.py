"""Run batches on a pool of threads, each with its own worker (and so its own connection).

The caller's thread keeps reading and planning batches while workers
encode and write: at most ``4 x workers`` batches are in flight, so memory
stays bounded however large the table. Workers share the process's model;
see ``encode.local.SentenceTransformerEncoder`` for why its calls are serialised.
That lock is also what keeps threads x torch threads within the cores: one
encode runs at a time, on all of them. Threads pay off where workers wait
(a remote database or embedding service), not where they compute.

With ``autoscale``, ``workers`` is a ceiling: the run starts with one batch
in flight and an ``Autoscaler`` raises or lowers that from the rows/s it
measures (``steps`` and ``chosen`` tell what it did).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from embedlib.plan.batching import Batch
from embedlib.run.autoscale import Autoscaler
from embedlib.run.executors.base import Executor, Worker, WorkerFactory, bounded_map
from embedlib.run.worker import BatchResult

# Batches submitted per thread: enough queued that the threads stay busy while
# the caller's thread reads the next window (tens of ms from a distant database).
IN_FLIGHT_PER_WORKER = 4
# The most threads autoscale may use when the user names no ceiling.
AUTOSCALE_MAX_WORKERS = 16


class ThreadedExecutor(Executor):
    name = "threaded"

    def __init__(self, workers: int = 2, *, autoscale: bool = False) -> None:
        super().__init__(workers)
        self.autoscale = autoscale
        self.autoscaler: Autoscaler | None = None  # the last run's, when autoscaling

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        local = threading.local()
        created: list[Worker] = []
        created_lock = threading.Lock()

        def run(batch: Batch) -> BatchResult:
            worker = getattr(local, "worker", None)
            if worker is None:
                worker = make_worker()
                local.worker = worker
                with created_lock:
                    created.append(worker)
            return worker(batch)

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="embedlib-worker")

        def submit(batch: Batch) -> Future[BatchResult]:
            return pool.submit(run, batch)

        scaler = self.autoscaler = Autoscaler(self.workers) if self.autoscale else None
        try:
            if scaler is None:
                yield from bounded_map(submit, batches, IN_FLIGHT_PER_WORKER * self.workers)
                return
            # In flight = running: a queued batch would hide whether more workers pay.
            for result in bounded_map(submit, batches, lambda: scaler.limit):
                scaler.record(result.rows)
                yield result
        finally:
            pool.shutdown(wait=True)  # batches already running finish and commit
            for worker in created:
                worker.close()
