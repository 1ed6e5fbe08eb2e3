"""The executor contract: run a worker over batches, yield results as they finish.

An executor decides only *how* batches move through workers (inline, on
threads, ...); what a worker does is the same everywhere. ``make_worker`` is
called once per thread or process that the executor uses; each worker is
closed when the run ends, however it ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Protocol

from embedlib.errors import ConfigError
from embedlib.plan.batching import Batch
from embedlib.run.worker import BatchResult, EncodedBatch


class Worker(Protocol):
    """What ``worker.BatchWorker`` offers: a whole batch, or its compute and database halves apart."""

    def __call__(self, batch: Batch) -> BatchResult: ...

    def encode(self, batch: Batch) -> EncodedBatch: ...

    def write(self, encoded: EncodedBatch) -> BatchResult: ...

    def close(self) -> None: ...


WorkerFactory = Callable[[], Worker]


class Executor(ABC):
    name: str = "base"

    def __init__(self, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers

    @abstractmethod
    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Yield one result per batch, in completion order. Stops at the first error and raises it."""

    def shutdown(self) -> None:
        """Release resources kept between runs. Safe to call more than once."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


def bounded_map(
    submit: Callable[[Batch], Future[BatchResult]],
    batches: Iterable[Batch],
    in_flight_limit: int | Callable[[], int],
) -> Iterator[BatchResult]:
    """Submit batches to a pool, at most ``in_flight_limit`` at a time, and yield results as they finish.

    The bound keeps memory flat however large the table: reading waits for
    the pool. It may be a function, asked before each batch (see autoscale).
    Batches not yet started when an error stops the run are cancelled.
    """
    limit = in_flight_limit if callable(in_flight_limit) else lambda: in_flight_limit
    in_flight: set[Future[BatchResult]] = set()
    try:
        for batch in batches:
            in_flight.add(submit(batch))
            while len(in_flight) >= limit():
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        for future in in_flight:
            future.cancel()
