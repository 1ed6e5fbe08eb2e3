"""The executor contract: run two steps over items, yield the results as they finish.

An executor decides only *where* and *how many at once*; it knows nothing of
tables, models or batches. It is handed ``Stages``:

- ``compute``: a factory of the first step. The executor may run that step
  anywhere: in this thread, on threads, in child processes or on Ray actors,
  so the factory must pickle for the last two. It holds no connection: in
  embedlib it encodes.
- ``finish``: a factory of the second step, run in this process only, on
  the executor's threads (the run's writers, each with its own connection).
  Its factory never leaves the process, so what it holds (a DSN, a
  password) never crosses a process boundary.

A factory is called once per thread, process or actor that runs its step;
every step made is closed when the run ends, however it ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from embedlib.rules import Whole

T = TypeVar("T")  # an item
M = TypeVar("M")  # what ``compute`` makes of it
R = TypeVar("R")  # what ``finish`` makes of that
In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


class Step(Protocol[In, Out]):
    def __call__(self, item: In, /) -> Out: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Stages(Generic[T, M, R]):
    compute: Callable[[], Step[T, M]]
    finish: Callable[[], Step[M, R]]


@dataclass(frozen=True)
class ExecutorStats:
    """What an executor chose in its last run: ``workers`` used at the end, and every level tried
    in order when it scaled itself (empty when it ran a fixed number)."""

    workers: int
    steps: list[int] = field(default_factory=list)


class Executor(ABC):
    name: str = "base"

    def __init__(self, workers: int = 1) -> None:
        Whole(1).check("workers", workers)
        self.workers = workers

    @abstractmethod
    def map_unordered(self, stages: Stages[T, Any, R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``finish(compute(item))`` for each item, in completion order. Stops at the first
        error and raises it; steps under way finish first."""

    def stats(self) -> ExecutorStats:
        return ExecutorStats(self.workers)

    def shutdown(self) -> None:
        """Release resources kept between runs. Safe to call more than once."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


def close_all(steps: Iterable[Step[Any, Any]]) -> None:
    """Close every step, even when one of them fails to; the first failure is raised after."""
    failure: BaseException | None = None
    for step in steps:
        try:
            step.close()
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def bounded_map(
    submit: Callable[[T], Future[R]],
    items: Iterable[T],
    in_flight_limit: int | Callable[[], int],
) -> Iterator[R]:
    """Submit items to a pool, at most ``in_flight_limit`` at a time, and yield results as they finish.

    The bound keeps memory flat however large the table: reading waits for
    the pool. It may be a function, asked before each item (see autoscale).
    Items not yet started when an error stops the run are cancelled.
    """
    limit = in_flight_limit if callable(in_flight_limit) else lambda: in_flight_limit
    in_flight: set[Future[R]] = set()
    try:
        for item in items:
            in_flight.add(submit(item))
            while len(in_flight) >= limit():
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        for future in in_flight:
            future.cancel()
