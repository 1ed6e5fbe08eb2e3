"""Run every batch inline, in the caller's thread: the reference every other executor must match."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from embedlib.plan.batching import Batch
from embedlib.run.executors.base import Executor, WorkerFactory
from embedlib.run.worker import BatchResult


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(1)  # one worker by definition; a larger count is ignored

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        worker = None  # made at the first batch: a run with nothing to do loads no model
        try:
            for batch in batches:
                if worker is None:
                    worker = make_worker()
                yield worker(batch)
        finally:
            if worker is not None:
                worker.close()
