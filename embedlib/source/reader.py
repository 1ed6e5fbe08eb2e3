"""Reading the source: the rows that need work, and what the target already knows.

Rows are read in id order, one span of the source's unique index at a time
(``id BETWEEN first AND last``, never OFFSET), each span leased first so
that runs sharing the table read different rows (see ``sharing``). Each span
looks its rows up in the target by primary key, so a query costs the same
whether the target holds ten rows or ten million, memory does not grow with
the table, and a run stopped half-way loses nothing: "needs work" is decided
by the target itself (no row, an old text hash, or another model), and by
the errors table for rows that failed too often.
"""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg2 import sql

from embedlib.db import copybin
from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, Session, fetch_all
from embedlib.source.rows import PendingRow, is_blank
from embedlib.source.sharing import Sharing

# Rows with no embedding yet, or whose text or model changed since; but not
# rows held back by their error record (``e``, see _chunk_rows).
_NEEDS_EMBEDDING = sql.SQL(
    "(t.id IS NULL OR t.text_hash IS DISTINCT FROM h.md5 OR t.model IS DISTINCT FROM %(model)s) AND e.id IS NULL"
)
# Rows already embedded from their current text (what --metrics-only recomputes).
_EMBEDDED = sql.SQL("t.id IS NOT NULL AND t.text_hash = h.md5 AND t.model = %(model)s")
# Text that holds something to embed (close to batching.is_blank, which decides: a row this
# calls blank and Python does not is still embedded, only counted as not needing the model).
NOT_BLANK = sql.SQL("s.text ~ '[^[:space:]]'")


_ALL = sql.SQL("TRUE")


def rows_of(source: SourceTable, where: sql.Composable = _ALL) -> sql.Composed:
    """The source's rows as ``(id, text)``, whatever its columns are called (one column may be both),
    its text as ``text`` (a ``char(n)``'s padding is not text), and never a row without an id."""
    return sql.SQL("(SELECT {id} AS id, {text} AS text FROM {source} WHERE {id} IS NOT NULL AND {where})").format(
        id=sql.Identifier(source.id_column),
        text=source.text_sql(),
        source=source.ident,
        where=where,
    )


# ``h.md5``: the md5 of the text of ``s`` (of '' for NULL: blank either way); ``e``: the
# row's error record, if it holds the row back (see _chunk_rows).
HELD_BACK = (
    "CROSS JOIN LATERAL (SELECT md5(coalesce(s.text, ''))) AS h(md5) "
    "LEFT JOIN {errors} e ON e.id = s.id AND e.text_hash = h.md5 "
    "AND (e.attempts = 0 OR e.attempts >= %(max_attempts)s OR e.failed_at >= %(run_started)s) "
)


def needs_work(metrics_only: bool) -> sql.SQL:
    """The condition on ``s``, ``h``, ``e`` and ``t`` (see _chunk_rows) of a row a run works on."""
    return _EMBEDDED if metrics_only else _NEEDS_EMBEDDING


def _chunk_rows(target: TargetTable, chunk: sql.Composable, *, up_to_highest: bool = False) -> sql.Composed:
    """``FROM``: rows of ``chunk`` (``rows_of`` the source) as ``s``, the md5 of their text as
    ``h.md5`` (of '' for NULL: blank either way) and their target row, if any, as ``t``.

    ``up_to_highest``: look rows up only up to the target's highest id, as
    it is when the query runs (NULL for an empty target; one index lookup,
    once per query). Rows past it have no target row, so they need no probe,
    which makes first runs and appended rows cheaper. Taken per query, not
    once per pass: spans another ingestor wrote and released since the pass
    began are then seen as written, not done again. A row stored between
    this read and its write is caught on write (see Sink).

    ``e`` is the row's error record if it holds the row back: the same text
    failed ``%(max_attempts)s`` times already, or failed during this run
    (since ``%(run_started)s``), so a second pass does not retry it at once;
    or it was blank and skipped (``attempts`` 0: nothing to try, see
    ``store.upkeep.skip_blank``), so it is not pending until its text changes.
    """
    parts = {"chunk": chunk, "target": target.ident, "errors": target.errors.ident, "first": target.first_chunk("t")}
    rows = "FROM {chunk} s " + HELD_BACK
    if not up_to_highest:
        return sql.SQL(rows + "LEFT JOIN {target} t ON t.id = s.id AND {first}").format(**parts)
    return sql.SQL(
        rows + "LEFT JOIN LATERAL (SELECT t.id, t.text_hash, t.model FROM {target} t "
        # OFFSET 0 keeps the subquery whole, so its test of s.id runs before the probe
        "WHERE t.id = s.id AND {first} AND s.id <= (SELECT hi.id FROM {target} hi ORDER BY hi.id DESC LIMIT 1) "
        "OFFSET 0) t ON TRUE"
    ).format(**parts)


@dataclass(frozen=True)
class Retries:
    """Which rows that failed before are tried again: those whose text failed fewer than
    ``max_attempts`` times, and not during this run (which started at the server's ``run_started``)."""

    max_attempts: int
    run_started: datetime.datetime

    def parameters(self) -> dict[str, object]:
        return {"max_attempts": self.max_attempts, "run_started": self.run_started}


def count_pending(
    conn: Connection,
    source: SourceTable,
    target: TargetTable,
    model: str,
    retries: Retries,
    *,
    metrics_only: bool = False,
) -> tuple[int, int]:
    """Rows that need work, and how many of them hold text to encode (the others are blank:
    they need their old vector removed and a record that they were skipped, not the model)."""
    query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {text}) {rows} WHERE {cond}").format(
        text=NOT_BLANK, rows=_chunk_rows(target, rows_of(source)), cond=needs_work(metrics_only)
    )
    pending, with_text = fetch_all(conn, query, {"model": model, **retries.parameters()})[0]
    return int(pending), int(with_text)


def has_vectors(conn: Connection, target: TargetTable, model: str) -> bool:
    """Whether the target holds any vector made by ``model``."""
    query = sql.SQL("SELECT EXISTS (SELECT FROM {target} WHERE model = %s)").format(target=target.ident)
    return bool(fetch_all(conn, query, (model,))[0][0])


def stored_vectors(
    conn: Connection, target: TargetTable, model: str, text_hashes: Sequence[str], *, chunks: bool = False
) -> dict[str, np.ndarray]:
    """Vectors the target already holds for these text hashes, made by ``model`` (binary COPY out);
    ``chunks``: for these chunk hashes (a chunked target's ``chunk_hash``)."""
    if not text_hashes:
        return {}
    with conn.cursor() as cur:
        query = cur.mogrify(
            sql.SQL(
                # One index probe per hash, whatever the planner thinks of the table's statistics
                # (it chose a scan of the whole target for 600 hashes out of a million rows).
                "SELECT h.text_hash, e.embedding FROM unnest(%s::text[]) AS h(text_hash) "
                "CROSS JOIN LATERAL (SELECT embedding FROM {target} t "
                "WHERE t.{column} = h.text_hash AND t.model = %s LIMIT 1) AS e"
            ).format(target=target.ident, column=sql.Identifier("chunk_hash" if chunks else "text_hash")),
            (list(text_hashes), model),
        )
        out = io.BytesIO()
        cur.copy_expert(b"COPY (" + query + b") TO STDOUT (FORMAT binary)", out)
    hashes, vectors = copybin.read_hashes_and_vectors(out.getvalue(), target.dimension, target.vector_type)
    return dict(zip(hashes, vectors, strict=True))


Span = tuple[str, str]  # the first and last id of a leased span, in their text form


class PendingReader:
    """Iterates windows of pending rows in id order; ``seconds`` is the time spent in queries.

    A window is what one span of up to ``window_size`` source ids holds that
    needs work (fewer rows, or none, where the target is up to date). Spans
    are leased one at a time (see ``sharing.Sharing``), so ingestors sharing
    the table read different rows.
    """

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
        limit: int | None = None,
        metrics_only: bool = False,
        on_covered: Callable[[str | None, str | None], None] | None = None,
    ) -> None:
        """``on_covered(after, last)`` is told of each stretch of ids ``(after, last]`` a pass over
        leased spans has read, the gaps before them and the tail past the last (``last`` None)
        included: the run removes the vectors of rows deleted from the source there."""
        self._session = session
        self._on_covered = on_covered
        self._model = model
        self._retries = retries
        self._sharing = sharing
        self._window_size = window_size
        self._limit = limit
        self.seconds = 0.0
        parts = {"id": sql.Identifier(source.id_column), "id_type": sql.SQL(source.id_type)}  # format_type: quoted
        span = sql.SQL("{id} >= CAST(%(first)s AS {id_type}) AND {id} <= CAST(%(last)s AS {id_type})").format(**parts)
        listed = sql.SQL("{id} = ANY (CAST(%(ids)s AS {id_type}[]))").format(**parts)
        # The text only of rows that need work.
        select = (
            "SELECT s.id::text, {cond}, CASE WHEN {cond} THEN s.text END, h.md5, t.id IS NOT NULL {rows} ORDER BY s.id"
        )
        self._query, self._query_of_ids = (
            sql.SQL(select).format(
                cond=needs_work(metrics_only), rows=_chunk_rows(target, rows_of(source, where), up_to_highest=True)
            )
            for where in (span, listed)
        )

    def __iter__(self) -> Iterator[list[PendingRow]]:
        remaining = self._limit
        after: str | None = None
        # The first spans are small and grow to window_size: the first batches
        # reach the encoder without waiting for a whole window to be read and planned.
        size = min(self._window_size, max(1000, self._window_size // 8))
        while remaining is None or remaining > 0:
            started = time.perf_counter()
            span = self._lease(after, size)
            if span is None:
                self.seconds += time.perf_counter() - started
                if self._on_covered is not None:
                    self._on_covered(after, None)  # past the source's last id: nothing but deleted rows
                return
            parameters = {
                "model": self._model,
                "first": span[0],
                "last": span[1],
                **self._retries.parameters(),
            }
            chunk = self._session.run(lambda conn: fetch_all(conn, self._query, parameters))  # noqa: B023 (run at once)
            self.seconds += time.perf_counter() - started
            window = _pending(chunk)
            if remaining is not None:  # blank rows cost nothing and count for nothing
                window = _first_with_text(window, remaining)
                remaining -= sum(not is_blank(row.text) for row in window)
            if window:
                yield window
            if self._on_covered is not None:  # once the window is planned: not in the way of its batches
                self._on_covered(after, span[1])
            after = span[1]
            size = min(2 * size, self._window_size)

    def read_again(self, rows: list[PendingRow]) -> list[PendingRow]:
        """``rows`` (an earlier pass deferred them) as the source holds them now, those that still
        need work: a row deleted or written since is left out, a row edited since comes with its
        new text. One query."""
        parameters = {"model": self._model, "ids": [row.id for row in rows], **self._retries.parameters()}
        found = self._session.run(lambda conn: fetch_all(conn, self._query_of_ids, parameters))
        return _pending(found)

    def _lease(self, after: str | None, size: int) -> Span | None:
        return self._session.run(lambda conn: self._sharing.take(conn, after, size))


def _pending(found: list[tuple[Any, ...]]) -> list[PendingRow]:
    """The rows of a query's result (id, pending, text, hash, stored) that need work."""
    return [
        PendingRow(row_id, text, text_hash, stored) for row_id, pending, text, text_hash, stored in found if pending
    ]


def _first_with_text(window: list[PendingRow], count: int) -> list[PendingRow]:
    """The rows of ``window`` up to and including its ``count``-th row with text (blank rows among them)."""
    seen = 0
    for position, row in enumerate(window):
        seen += not is_blank(row.text)
        if seen == count:
            return window[: position + 1]
    return window
