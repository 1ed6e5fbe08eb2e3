"""Overlap reading, encoding and writing: three stages joined by bounded queues.

The batches iterator (which reads the source and plans batches) runs on a
reader thread, the model on an encoder thread, and writes happen in the
caller's thread as it takes results. While the model encodes batch n, batch
n+1 is being read and planned and batch n-1 written, so the model never
waits for the database (the original design's "batch prefetching"). Each
queue holds at most ``depth`` batches: memory stays bounded whatever the
table's size.

There is one worker: its encode half runs on the encoder thread, its write
half (and so its connection) only in the caller's thread. One encoder is
the point: torch already spreads one encode over every core.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from embedlib.batching import Batch
from embedlib.executors.base import Executor, Worker, WorkerFactory
from embedlib.worker import BatchResult

_END = object()  # put by a stage when it has nothing more to pass on
_POLL_S = 0.1  # how often a blocked stage checks whether the run was stopped
# A thread that waited on the database (COPY, commit) needs the GIL back to go
# on; with Python's default 5 ms switch interval it waits that long behind a
# busy planner thread at every such step, which halved COPY throughput here.
# 0.5 ms gives it back at once, for the duration of a run.
_SWITCH_INTERVAL_S = 0.0005


class PipelinedExecutor(Executor):
    name = "pipelined"

    def __init__(self, workers: int = 1, *, depth: int = 2) -> None:
        super().__init__(1)  # one encoder by design; a larger count is ignored
        self.depth = depth

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        stop = threading.Event()
        errors: list[BaseException] = []
        planned: queue.Queue[Any] = queue.Queue(self.depth)
        encoded: queue.Queue[Any] = queue.Queue(self.depth)
        workers: list[Worker] = []  # made by the encoder at the first batch: no batch, no model loaded

        def read() -> None:
            for batch in batches:
                if not _put(planned, batch, stop):
                    return
            _put(planned, _END, stop)

        def encode() -> None:
            while (batch := _get(planned, stop)) is not _END:
                if not workers:
                    workers.append(make_worker())
                if not _put(encoded, workers[0].encode(batch), stop):
                    return
            _put(encoded, _END, stop)

        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        stages = [_stage(read, "embedlib-reader", stop, errors), _stage(encode, "embedlib-encoder", stop, errors)]
        try:
            while (item := _get(encoded, stop)) is not _END:
                yield workers[0].write(item)
            if errors:
                raise errors[0]
        finally:
            stop.set()
            for stage in stages:
                stage.join()  # an encode under way finishes first
            for worker in workers:
                worker.close()
            sys.setswitchinterval(switch_interval)


def _stage(target: Any, name: str, stop: threading.Event, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the caller's thread, which raises it
            errors.append(exc)
            stop.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


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
