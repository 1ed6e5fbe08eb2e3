"""Overlap reading, encoding and writing: stages on threads, joined by bounded queues.

    batches (read + plan) --> encoder thread(s) --> writer threads (``workers``, default 2)

The batches iterator (which reads the source and plans batches) runs on a
reader thread, the model on one encoder thread, and writes on ``workers``
writer threads, each with its own connection; the caller's thread collects
results. While the model encodes batch n, batch n+1 is read and planned and
batch n-1 written, so the model never waits for the database (the original
design's "batch prefetching"). Each queue holds at most ``depth`` batches
per writer (4 by default): memory stays bounded whatever the table's size,
and the writers have work while the reader waits on its next window.

One encoder is the point for a local model: torch already spreads one
encode over every core. More writers help only where writing is the slow
part (a fast encoder, a remote database). An encoder whose calls can overlap
(``concurrent_encoding``: a remote service, which does the work while the
thread waits) gets ``workers`` encoder threads instead, so that many
requests are in flight while earlier batches are written.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from embedlib.plan.batching import Batch
from embedlib.run.executors.base import Executor, Worker, WorkerFactory
from embedlib.run.worker import BatchResult

_END = object()  # put by a stage when it has nothing more to pass on
_POLL_S = 0.1  # how often a blocked stage checks whether the run was stopped
# A thread that waited on the database (COPY, commit) needs the GIL back to go
# on; with Python's default 5 ms switch interval it waits that long behind a
# busy planner thread at every such step, a large share of a fast COPY's time
# (docs/performance.md). 0.5 ms gives it back at once, for the duration of a run.
_SWITCH_INTERVAL_S = 0.0005


class PipelinedExecutor(Executor):
    name = "pipelined"

    def __init__(self, workers: int = 2, *, depth: int = 4, concurrent_encoding: bool = False) -> None:
        super().__init__(workers)
        self.depth = depth
        # An encoder whose calls can overlap (a remote service): as many encoder threads as writers.
        self.encoders = self.workers if concurrent_encoding else 1

    def encoder_factory(self, make_worker: WorkerFactory) -> WorkerFactory:
        """What makes each encoder thread's worker (only its ``encode`` half is used): here, in
        this process; the Ray executor's encode on actors instead."""
        return make_worker

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        stop = threading.Event()
        errors: list[BaseException] = []
        planned: queue.Queue[Any] = queue.Queue(self.depth * self.workers)
        encoded: queue.Queue[Any] = queue.Queue(self.depth * self.workers)
        results: queue.Queue[Any] = queue.Queue()  # bounded by the stages before it
        workers: list[Worker] = []  # made at a stage's first batch: no batch, no model loaded
        workers_lock = threading.Lock()

        def new_worker(factory: WorkerFactory = make_worker) -> Worker:
            worker = factory()
            with workers_lock:
                workers.append(worker)
            return worker

        encoder_factory = self.encoder_factory(make_worker)

        def read() -> None:
            for batch in batches:
                if not _put(planned, batch, stop):
                    return
            _put(planned, _END, stop)

        encoders_left = [self.encoders]

        def encode() -> None:
            encoder: Worker | None = None  # its encode half only: it never connects
            while (batch := _get(planned, stop)) is not _END:
                encoder = encoder or new_worker(encoder_factory)
                if not _put(encoded, encoder.encode(batch), stop):
                    return
            _put(planned, _END, stop)  # passed on, for the other encoder threads
            with workers_lock:
                encoders_left[0] -= 1
                last = encoders_left[0] == 0
            if last:
                for _ in range(self.workers):
                    _put(encoded, _END, stop)

        def write() -> None:
            writer: Worker | None = None
            while (item := _get(encoded, stop)) is not _END:
                writer = writer or new_worker()
                results.put(writer.write(item))
            results.put(_END)

        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        stages = [_stage(read, "embedlib-reader", stop, errors)]
        stages += [_stage(encode, f"embedlib-encoder-{n}", stop, errors) for n in range(self.encoders)]
        stages += [_stage(write, f"embedlib-writer-{n}", stop, errors) for n in range(self.workers)]
        try:
            finished_writers = 0
            while finished_writers < self.workers and not stop.is_set():
                result = _get(results, stop)
                if result is _END:
                    finished_writers += 1
                else:
                    yield result
        finally:
            stop.set()
            for stage in stages:
                stage.join()  # an encode or a write under way finishes first
            for worker in workers:
                worker.close()
            sys.setswitchinterval(switch_interval)
        if errors:
            yield from _drain(results)  # batches written before the error are reported all the same
            raise errors[0]


def _stage(
    target: Callable[[], None], name: str, stop: threading.Event, errors: list[BaseException]
) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the caller's thread, which raises it
            errors.append(exc)
            stop.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _drain(q: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if item is not _END:
            yield item


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False if the run was stopped first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or ``_END`` once the run is stopped."""
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _END
