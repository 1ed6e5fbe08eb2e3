"""Run batches on a pool of threads, each with its own worker (and so its own connection).

The caller's thread keeps reading and planning batches while workers
encode and write: at most ``2 x workers`` batches are in flight, so memory
stays bounded however large the table. Workers share the process's model;
see ``encoder.SentenceTransformerEncoder`` for why its calls are serialised.
That lock is also what keeps threads x torch threads within the cores: one
encode runs at a time, on all of them. Threads pay off where workers wait
(a remote database or embedding service), not where they compute.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from embedlib.batching import Batch
from embedlib.executors.base import Executor, Worker, WorkerFactory, bounded_map
from embedlib.worker import BatchResult


class ThreadedExecutor(Executor):
    name = "threaded"

    def __init__(self, workers: int = 2) -> None:
        super().__init__(workers)

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
        try:
            yield from bounded_map(lambda batch: pool.submit(run, batch), batches, 2 * self.workers)
        finally:
            pool.shutdown(wait=True)  # batches already running finish and commit
            for worker in created:
                worker.close()
