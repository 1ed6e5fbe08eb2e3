"""The passes of one run over the source: read and plan on one side, the executor's steps on the other.

The first pass covers the spans this run leases. Rows it deferred (their text
was claimed by another run sharing the table, or was still in flight when
the pass ended) are planned again by later passes, read again by id (see
``_replay``), until none are left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from embedlib.backoff import Backoff
from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Session
from embedlib.options import Settings
from embedlib.plan.awaiting import InFlight
from embedlib.plan.batching import Batch
from embedlib.plan.planner import Planner, PlanOptions
from embedlib.run.executors import Executor, Stages
from embedlib.run.prepare import Prepared
from embedlib.run.report import BatchResult, IngestReport
from embedlib.source.changes import QueueReader
from embedlib.source.reader import PendingReader, Retries
from embedlib.source.rows import PendingRow
from embedlib.source.sharing import Sharing

# How long a run waits for another run sharing the table to store a text they
# both need, before encoding it itself: that run should take seconds.
CLAIM_WAIT_S = 300.0


@dataclass(frozen=True)
class Passes:
    """What every pass of one run shares."""

    settings: Settings
    session: Session  # the run's reading connection
    prepared: Prepared
    sharing: Sharing
    retries: Retries
    duplicates: dict[str, int]  # source.counts.duplicate_counts
    executor: Executor
    stages: Stages[Batch, Any, BatchResult]
    on_blank: Callable[[list[PendingRow]], None]  # records the blank rows a pass meets
    on_covered: Callable[[str | None, str | None], None]  # cleans up a stretch of ids the first pass read
    on_gone: Callable[[list[str], list[int]], None]  # removes rows the change queue names that are gone
    in_flight: InFlight  # rows waiting for a text this run is encoding (the writers report to it)
    report: IngestReport
    stop: threading.Event
    bar: Any  # a tqdm progress bar
    from_queue: bool = False  # read the change queue's entries, not the source (a tracked table)
    touched: set[str] = field(default_factory=set)  # text hashes the passes from the queue touched

    def run(self, options: PlanOptions, limit: int | None) -> None:
        """The first pass over the spans this run leases (or, ``from_queue``, over the entries of the
        change queue it holds); then passes over those with rows deferred, until none are left."""
        planner = self._pass(options, limit=limit)
        options.defer_in_flight = False  # this run's batches are all written now
        options.had_vectors = True  # those batches' vectors among them
        backoff = Backoff(0.05, 1.0)
        while planner.deferred_rows and not self.stop.is_set():
            # Rows whose text was in flight: this run's (its vector is stored now), or
            # another run's (stored soon, or its claim freed if that run dies). Wait for
            # the other run, but not forever: past CLAIM_WAIT_S, encode the text here too.
            # Read again first (``_replay``): a row deleted or written since is left out.
            options.respect_claims = backoff.waited < CLAIM_WAIT_S
            planner = self._pass(options, rows=planner.deferred_rows)
            if planner.deferred_rows:
                backoff.sleep()

    def _pass(self, options: PlanOptions, *, limit: int | None = None, rows: list[PendingRow] | None = None) -> Planner:
        """One scan of the source (or the ``rows`` an earlier pass deferred, which holds no blank
        row): plan batches, run them on the executor, add up the results."""
        prepared, report = self.prepared, self.report
        again = rows is not None
        reader = self._reader(limit) if rows is None else self._replay(rows)
        planner = Planner(
            self.session,
            prepared.target,
            prepared.model_key,
            self.duplicates,
            options,
            self.sharing,
            self.on_blank,
            self.in_flight,
        )
        skipped = 0
        for result in self.executor.map_unordered(self.stages, _until_set(self.stop, planner.batches(reader))):
            report.add(result)
            newly_skipped = 0 if again else planner.skipped - skipped
            self.bar.update(result.rows + result.failed + newly_skipped)
            skipped = planner.skipped
        if not again:
            report.skipped += planner.skipped
            self.bar.update(planner.skipped - skipped)
            stats = self.executor.stats()
            if stats.steps:
                report.workers, report.autoscale_steps = stats.workers, stats.steps
        report.read_s += reader.seconds
        if isinstance(reader, QueueReader):
            self.touched.update(reader.touched)
        return planner

    def _reader(self, limit: int | None) -> PendingReader | QueueReader:
        if self.from_queue:
            window = self.settings.window
            return QueueReader(*self._parts(), window_size=window, on_gone=self.on_gone, limit=limit)
        return self._pending_reader(limit)

    def _pending_reader(self, limit: int | None) -> PendingReader:
        s = self.settings
        return PendingReader(
            *self._parts(), window_size=s.window, limit=limit, metrics_only=s.metrics_only, on_covered=self.on_covered
        )

    def _parts(self) -> tuple[Session, SourceTable, TargetTable, str, Retries, Sharing]:
        p = self.prepared
        return self.session, p.source, p.target, p.model_key, self.retries, self.sharing

    def _replay(self, rows: list[PendingRow]) -> _Replay:
        """A later pass's reader: the rows deferred, read again by id from the source as it is now
        (one query a window; no lease), or as they were read from a change queue, whose entries
        say at write time whether a row is still as read (``db.queue.ChangeQueue.settle``)."""
        if self.from_queue:
            return _Replay(rows, self.settings.window, lambda window: window)
        return _Replay(rows, self.settings.window, self._pending_reader(None).read_again)


class _Replay:
    """The rows an earlier pass deferred, again, in windows, each through ``again``."""

    def __init__(
        self, rows: list[PendingRow], window: int, again: Callable[[list[PendingRow]], list[PendingRow]]
    ) -> None:
        self._rows, self._window, self._again = rows, window, again
        self.seconds = 0.0

    def __iter__(self) -> Iterator[list[PendingRow]]:
        for start in range(0, len(self._rows), self._window):
            started = time.perf_counter()
            window = self._again(self._rows[start : start + self._window])
            self.seconds += time.perf_counter() - started
            if window:
                yield window


def _until_set(stop: threading.Event, batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, until ``stop`` is set."""
    for batch in batches:
        if stop.is_set():
            return
        yield batch
