"""Reading the rows that need work, in id order, a window at a time.

Keyset pagination (``id > last id``) over the source's unique index: each
window is one short query, memory does not grow with the table, and a run
stopped half-way loses nothing, because "needs work" is decided by the
target itself (no row, an old text hash, or another model).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from psycopg2 import sql

from embedlib.batching import PendingRow
from embedlib.db import Connection, fetch_all
from embedlib.schema import SourceTable, TargetTable

# Rows with no embedding yet, or whose text or model changed since.
_NEEDS_EMBEDDING = sql.SQL(
    "t.id IS NULL OR t.text_hash IS DISTINCT FROM md5(s.{text}) OR t.model IS DISTINCT FROM %(model)s"
)
# Rows already embedded from their current text (what --metrics-only recomputes).
_EMBEDDED = sql.SQL("t.id IS NOT NULL AND t.text_hash = md5(s.{text}) AND t.model = %(model)s")


def _condition(source: SourceTable, metrics_only: bool) -> sql.Composed:
    template = _EMBEDDED if metrics_only else _NEEDS_EMBEDDING
    return template.format(text=sql.Identifier(source.text_column))


def count_pending(
    conn: Connection, source: SourceTable, target: TargetTable, model: str, *, metrics_only: bool = False
) -> int:
    query = sql.SQL("SELECT count(*) FROM {source} s LEFT JOIN {target} t ON t.id = s.{id} WHERE {cond}").format(
        source=source.ident,
        target=target.ident,
        id=sql.Identifier(source.id_column),
        cond=_condition(source, metrics_only),
    )
    return int(fetch_all(conn, query, {"model": model})[0][0])


class PendingReader:
    """Iterates windows of pending rows; ``seconds`` is the time spent in queries."""

    def __init__(
        self,
        conn: Connection,
        source: SourceTable,
        target: TargetTable,
        model: str,
        *,
        window_size: int,
        limit: int | None = None,
        metrics_only: bool = False,
    ) -> None:
        self._conn = conn
        self._model = model
        self._window_size = window_size
        self._limit = limit
        self.seconds = 0.0
        parts = {
            "source": source.ident,
            "target": target.ident,
            "id": sql.Identifier(source.id_column),
            "text": sql.Identifier(source.text_column),
            "id_type": sql.SQL(source.id_type),  # from format_type: already quoted
            "cond": _condition(source, metrics_only),
        }
        select = (
            "SELECT s.{id}::text, s.{text}, md5(s.{text}) "
            "FROM {source} s LEFT JOIN {target} t ON t.id = s.{id} WHERE ({cond}) "
        )
        order = "ORDER BY s.{id} LIMIT %(limit)s"
        self._first_query = sql.SQL(select + order).format(**parts)
        self._next_query = sql.SQL(select + "AND s.{id} > CAST(%(after)s AS {id_type}) " + order).format(**parts)

    def __iter__(self) -> Iterator[list[PendingRow]]:
        remaining = self._limit
        after: str | None = None
        while remaining is None or remaining > 0:
            size = self._window_size if remaining is None else min(self._window_size, remaining)
            started = time.perf_counter()
            query = self._first_query if after is None else self._next_query
            rows = [
                PendingRow(*row)
                for row in fetch_all(self._conn, query, {"model": self._model, "after": after, "limit": size})
            ]
            self.seconds += time.perf_counter() - started
            if not rows:
                return
            yield rows
            after = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < size:
                return
