"""Keeping a table in step: run, wait for changes, run again, until asked to stop.

A follower listens on its target's NOTIFY channel (``db.queue.ChangeQueue.channel``),
on which a tracked table's triggers signal every change: it wakes at once,
waits ``GATHER_S`` for the rest of a burst, and runs on what the queue holds,
which costs what the changes cost. It also runs every ``poll_s`` whatever it
hears: on an untracked table that is the only way it learns of changes, and
each such run scans the source span by span (see docs/guide.md#following-a-table).
"""

from __future__ import annotations

import dataclasses
import select
import threading
import time
from collections.abc import Callable

import psycopg2
from psycopg2 import sql

from embedlib.db.session import Connection, connect
from embedlib.redaction import get_logger
from embedlib.run.report import IngestReport

log = get_logger(__name__)

# How long a follower, woken by a change, waits for more before it runs: a burst of small
# commits then makes one run with full batches, for a few tens of milliseconds of lag.
GATHER_S = 0.03
_TICK_S = 0.1  # how often a wait looks at the stop event


class Wakeups:
    """Waits for a NOTIFY on ``channel`` (None: for ``poll_s`` only). A lost listening connection
    is made again at the next wait; until then the follower polls."""

    def __init__(self, dsn: str, channel: str | None) -> None:
        self._dsn = dsn
        self._channel = channel
        self._conn: Connection | None = None
        self._listen()

    def _listen(self) -> None:
        if self._channel is None:
            return
        try:
            self._conn = connect(self._dsn, autocommit=True)
            with self._conn.cursor() as cur:
                cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except (psycopg2.Error, OSError) as exc:
            log.warning("cannot listen for changes (%s); polling until the next try", type(exc).__name__)
            self.close()

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Until a change is signalled (True), ``timeout`` passes, or ``stop`` is set (False)."""
        if self._conn is None:
            self._listen()
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._conn is None:
                stop.wait(min(left, _TICK_S))
            elif self._heard(min(left, _TICK_S)):
                stop.wait(GATHER_S)
                self._heard(0)  # what the burst signalled meanwhile: this run covers it
                return True
        return False

    def _heard(self, timeout: float) -> bool:
        conn = self._conn
        assert conn is not None
        try:
            if timeout > 0:
                select.select([conn], [], [], timeout)
            conn.poll()
        except (psycopg2.Error, OSError, ValueError):
            log.warning("lost the connection listening for changes; polling until it is back")
            self.close()
            return False
        heard = bool(conn.notifies)
        conn.notifies.clear()
        return heard

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


def follow(
    run_once: Callable[[], IngestReport],
    stop: threading.Event,
    poll_s: float,
    wakeups: Wakeups,
    on_cycle: Callable[[IngestReport], None] | None = None,
    *,
    every_cycle: bool = False,
) -> IngestReport:
    """``run_once`` until ``stop`` is set: after each change ``wakeups`` hears of, and at least every
    ``poll_s``. ``on_cycle`` is given the report of every run that did something (``every_cycle``:
    of every run). The sum of them."""

    def tell(report: IngestReport) -> None:
        if on_cycle is not None and (every_cycle or report.did_something):
            on_cycle(report)

    first = run_once()
    tell(first)
    total = dataclasses.replace(first)  # the sum, apart from the first run's own report
    while not total.stopped:
        wakeups.wait(stop, poll_s)
        if stop.is_set():
            break
        report = run_once()
        total.merge(report)
        tell(report)
    total.stopped = True  # asked to stop: what a stop under way left is pending for the next run
    return total
