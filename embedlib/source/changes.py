"""Reading a tracked table: the rows its change queue names, not the whole source.

A run holds queue entries (``db.queue.ChangeQueue.claim``) a window at a
time and looks their rows up by id, in the source, the target and the
errors table, as the span reader does. What each entry comes to:

- a row that needs work: into the window, with its entry's ``seq``; the
  entry leaves the queue with the row's write (``store.sink``);
- a row with nothing to do (its vector is current, its blank text recorded,
  or its text given up on): the entry leaves the queue here;
- a row whose text failed during this run: its entry stays, held by the run
  until it ends, for a later run to try again (up to ``max_attempts``);
- a row the source no longer holds: ``on_gone`` removes its vector, its
  error record and its entry, in one transaction.

``touched`` collects the text hashes whose number of rows the run may
change (old texts and new ones): their frequency is refreshed after the run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator

from psycopg2 import sql

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, Session, fetch_all, transaction
from embedlib.source.reader import HELD_BACK, Retries, needs_work, rows_of
from embedlib.source.rows import PendingRow, is_blank
from embedlib.source.sharing import Sharing


class QueueReader:
    """Iterates windows of pending rows named by the change queue; ``seconds`` is the time spent in
    queries."""

    def __init__(
        self,
        session: Session,
        source: SourceTable,
        target: TargetTable,
        model: str,
        retries: Retries,
        sharing: Sharing,
        *,
        window_size: int,
        on_gone: Callable[[list[str], list[int]], None],
        limit: int | None = None,
    ) -> None:
        self._session = session
        self._queue = target.queue
        self._model = model
        self._retries = retries
        self._holder = sharing.key
        self._window_size = window_size
        self._on_gone = on_gone
        self._limit = limit
        self.seconds = 0.0
        self.touched: set[str] = set()
        cond = needs_work(False)
        self._query = sql.SQL(
            "SELECT c.id::text, c.seq, s.id IS NOT NULL, {cond}, CASE WHEN {cond} THEN s.text END, h.md5, "
            "t.id IS NOT NULL, t.text_hash, e.id IS NOT NULL AND e.attempts BETWEEN 1 AND %(max_attempts)s - 1 "
            "FROM unnest(CAST(%(ids)s AS {id_type}[]), %(seqs)s::int8[]) AS c(id, seq) "
            "LEFT JOIN {rows} s ON s.id = c.id "
            + HELD_BACK
            + "LEFT JOIN {target} t ON t.id = c.id AND {first} ORDER BY c.id"
        ).format(
            cond=cond,
            id_type=sql.SQL(source.id_type),  # format_type: quoted already
            rows=rows_of(source),
            errors=target.errors.ident,
            target=target.ident,
            first=target.first_chunk("t"),
        )

    def __iter__(self) -> Iterator[list[PendingRow]]:
        remaining = self._limit
        # What was queued when the pass began: a table written to all the time does not keep a
        # run going (a follower's next run takes the rest).
        up_to = self._session.run(self._queue.last_seq)
        while (remaining is None or remaining > 0) and up_to is not None:
            started = time.perf_counter()
            size = self._window_size if remaining is None else min(self._window_size, remaining)
            claim = functools.partial(self._queue.claim, holder=self._holder, size=size, up_to_seq=up_to)
            entries = self._session.run(claim)
            if not entries:
                break
            window = self._triage(entries)
            self.seconds += time.perf_counter() - started
            if remaining is not None:
                remaining -= sum(not is_blank(row.text) for row in window)
            if window:
                yield window

    def _triage(self, entries: dict[str, int]) -> list[PendingRow]:
        """The rows of ``entries`` that need work; the others' entries dealt with here."""
        parameters = {
            "ids": list(entries),
            "seqs": list(entries.values()),
            "model": self._model,
            **self._retries.parameters(),
        }
        rows = self._session.run(lambda conn: fetch_all(conn, self._query, parameters))
        window: list[PendingRow] = []
        done: dict[str, int] = {}  # nothing to do: the entry goes
        gone: dict[str, int] = {}
        for row_id, seq, present, pending, text, text_hash, stored, stored_hash, retry_later in rows:
            if not present:
                gone[row_id] = seq
            elif pending:
                window.append(PendingRow(row_id, text, text_hash, stored, seq))
                if not is_blank(text):
                    self.touched.add(text_hash)
            elif not retry_later:  # up to date, blank and recorded, or given up on
                done[row_id] = seq
            if stored_hash is not None and (pending or not present):
                self.touched.add(stored_hash)
        if done:
            self._session.run(lambda conn: self._dequeue(conn, done))
        if gone:
            self._on_gone(list(gone), list(gone.values()))
        return window

    def _dequeue(self, conn: Connection, entries: dict[str, int]) -> None:
        with transaction(conn), conn.cursor() as cur:
            self._queue.settle(cur, self._holder, list(entries), list(entries.values()))
