"""Overlap reading, computing and finishing: stages on threads, joined by bounded queues.

    items (read + plan) --> compute thread(s) --> finish threads (``workers``, default 2)

The items iterator (which reads the source and plans batches) runs on a
reader thread, the first step on one compute thread, and the second on
``workers`` finish threads; the caller's thread collects results. While
the model encodes batch n, batch n+1 is read and planned and batch n-1
written, so the model never waits for the database (the original design's
"batch prefetching"). Each queue holds at most ``depth`` items per worker (4
by default): memory stays bounded whatever the table's size, and the writers
have work while the reader waits on its next window.

One compute thread is the point for a local model: torch already spreads one
encode over every core. More workers help only where finishing is the slow
part (a fast encoder, a remote database). Where calls can overlap
(``concurrent_compute``: a remote service, which does the work while the
thread waits) there are ``workers`` compute threads instead, so that many
requests are in flight while earlier batches are written. Subclasses run the
first step elsewhere (processes, Ray actors) by overriding ``compute_steps``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from embedlib.run.executors.base import Executor, Stages, Step, T, close_all

_END = object()  # put by a stage when it has nothing more to pass on
_POLL_S = 0.1  # how often a blocked stage checks whether the run was stopped


class PipelinedExecutor(Executor):
    name = "pipelined"

    def __init__(self, workers: int = 2, *, depth: int = 4, concurrent_compute: bool = False) -> None:
        super().__init__(workers)
        self.depth = depth
        self.computers = self.workers if concurrent_compute else 1

    def compute_steps(self, stages: Stages[T, Any, Any]) -> Callable[[], Step[T, Any]]:
        """What makes each compute thread's step: here, the step itself, in this process."""
        return stages.compute

    def map_unordered(self, stages: Stages[T, Any, Any], items: Iterable[T]) -> Iterator[Any]:
        run = _Run(self.depth * self.workers)
        make_compute = self.compute_steps(stages)
        computers_left = [self.computers]

        def read() -> None:
            for item in items:
                if not run.put(run.planned, item):
                    return
            run.put(run.planned, _END)

        def compute() -> None:
            step: Step[T, Any] | None = None  # made at the first item: no item, no model loaded
            while (item := run.get(run.planned)) is not _END:
                step = step or run.made(make_compute)
                if not run.put(run.computed, step(item)):
                    return
            run.put(run.planned, _END)  # passed on, for the other compute threads
            if run.last_of(computers_left):
                for _ in range(self.workers):
                    run.put(run.computed, _END)

        def finish() -> None:
            step: Step[Any, Any] | None = None
            while (item := run.get(run.computed)) is not _END:
                step = step or run.made(stages.finish)
                run.results.put(step(item))
            run.results.put(_END)

        run.start(read, "embedlib-reader")
        for n in range(self.computers):
            run.start(compute, f"embedlib-compute-{n}")
        for n in range(self.workers):
            run.start(finish, f"embedlib-writer-{n}")
        yield from run.collect(self.workers)


class _Run:
    """The queues, threads and steps of one ``map_unordered`` call."""

    def __init__(self, bound: int) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.planned: queue.Queue[Any] = queue.Queue(bound)
        self.computed: queue.Queue[Any] = queue.Queue(bound)
        self.results: queue.Queue[Any] = queue.Queue()  # bounded by the stages before it
        self._threads: list[threading.Thread] = []
        self._steps: list[Step[Any, Any]] = []
        self._lock = threading.Lock()

    def made(self, factory: Callable[[], Step[Any, Any]]) -> Step[Any, Any]:
        step = factory()
        with self._lock:
            self._steps.append(step)
        return step

    def last_of(self, counter: list[int]) -> bool:
        with self._lock:
            counter[0] -= 1
            return counter[0] == 0

    def start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # handed to the caller's thread, which raises it
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def collect(self, finishers: int) -> Iterator[Any]:
        try:
            finished = 0
            while finished < finishers and not self.stop.is_set():
                result = self.get(self.results)
                if result is _END:
                    finished += 1
                else:
                    yield result
        finally:
            self.stop.set()
            for thread in self._threads:
                thread.join()  # a step under way finishes first
            close_all(self._steps)
        if self.errors:
            yield from _drain(self.results)  # items finished before the error are reported all the same
            raise self.errors[0]

    def put(self, q: queue.Queue[Any], item: object) -> bool:
        """Put ``item``, waiting for room; False if the run was stopped first."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        """The next item, or ``_END`` once the run is stopped."""
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END


def _drain(q: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if item is not _END:
            yield item
