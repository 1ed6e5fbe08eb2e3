"""Run items on a pool of threads, each with its own pair of steps (and so its own connection).

The caller's thread keeps reading and planning while the threads compute and
finish: at most ``4 x workers`` items are in flight, so memory stays bounded
however large the table. Threads pay off where steps wait (a remote database
or embedding service), not where they compute: a local model serialises its
calls (see ``encode.local.SentenceTransformerEncoder``), and that lock is
also what keeps threads x torch threads within the cores.

With ``autoscale``, ``workers`` is a ceiling: the run starts with one item
in flight and an ``Autoscaler`` raises or lowers that from the rows/s it
measures; ``stats()`` tells what it did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from embedlib.run.autoscale import Autoscaler
from embedlib.run.executors.base import Executor, ExecutorStats, Stages, Step, T, bounded_map, close_all

# Items submitted per thread: enough queued that the threads stay busy while
# the caller's thread reads the next window (tens of ms from a distant database).
IN_FLIGHT_PER_WORKER = 4
# The most threads autoscale may use when the user names no ceiling.
AUTOSCALE_MAX_WORKERS = 16


class ThreadedExecutor(Executor):
    name = "threaded"

    def __init__(
        self, workers: int = 2, *, autoscale: bool = False, size_of: Callable[[Any], int] | None = None
    ) -> None:
        """``size_of`` weighs a result for the autoscaler; by default a result's ``rows`` if it has
        them (a batch written), else 1."""
        super().__init__(workers)
        self.autoscale = autoscale
        self._size_of = size_of or _rows_or_one
        self._autoscaler: Autoscaler | None = None  # the last run's, when autoscaling

    def stats(self) -> ExecutorStats:
        if self._autoscaler is None:
            return ExecutorStats(self.workers)
        return ExecutorStats(self._autoscaler.chosen, list(self._autoscaler.steps))

    def map_unordered(self, stages: Stages[T, Any, Any], items: Iterable[T]) -> Iterator[Any]:
        local = threading.local()
        made: list[Step[Any, Any]] = []
        made_lock = threading.Lock()

        def run(item: T) -> Any:
            steps = getattr(local, "steps", None)
            if steps is None:
                steps = local.steps = (stages.compute(), stages.finish())
                with made_lock:
                    made.extend(steps)
            compute, finish = steps
            return finish(compute(item))

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="embedlib-worker")

        def submit(item: T) -> Future[Any]:
            return pool.submit(run, item)

        scaler = self._autoscaler = Autoscaler(self.workers) if self.autoscale else None
        try:
            if scaler is None:
                yield from bounded_map(submit, items, IN_FLIGHT_PER_WORKER * self.workers)
                return
            # In flight = running: a queued item would hide whether more workers pay.
            for result in bounded_map(submit, items, lambda: scaler.limit):
                scaler.record(self._size_of(result))
                yield result
        finally:
            pool.shutdown(wait=True)  # items already running finish (and commit)
            close_all(made)


def _rows_or_one(result: Any) -> int:
    return int(getattr(result, "rows", 1))
