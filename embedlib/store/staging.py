"""Staging tables: a batch is COPYed into a temporary table, then one statement applies it.

From a distant database each round trip costs more than writing a small
batch, so a batch costs three: the COPY's statement, its rows, and the
statements that apply them, sent as one string. On an autocommit connection
the COPY commits on its own (the stage keeps its rows: ``ON COMMIT PRESERVE
ROWS``) and the string runs as one transaction, which applies the rows and
empties the stage together, so either the batch is written and the stage
empty, or neither. A transaction around it all would add a BEGIN and a
COMMIT.

Where something must be read in the middle (which change queue entries are
still there to take: ``settle``), the batch is one transaction instead:
BEGIN, the COPY, that read, the statements, COMMIT.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import psycopg2
from psycopg2 import sql

from embedlib.db.queue import Cursor
from embedlib.db.session import Connection, autocommitting, rollback_quietly


class Staging:
    """The staging tables of one connection (made on first use, forgotten when it is replaced)."""

    def __init__(self) -> None:
        self._made: set[str] = set()

    def forget(self) -> None:
        """A new connection: its temporary tables are yet to be made."""
        self._made.clear()

    def apply(
        self,
        conn: Connection,
        stage: sql.Identifier,
        columns: str,
        data: bytes,
        statements: Sequence[sql.Composed],
        parameters: dict[str, object],
        settle: Callable[[Cursor], list[str]] | None = None,
    ) -> None:
        """COPY ``data`` (binary) into ``stage`` (``columns``), then run ``statements`` on it with
        ``parameters``; ``settle(cursor)`` gives ``%(settled)s`` in the same transaction, if given."""
        self._make(conn, stage, columns)
        copy = sql.SQL("COPY pg_temp.{} FROM STDIN (FORMAT binary)").format(stage)
        emptied = [*statements, sql.SQL("TRUNCATE pg_temp.{}").format(stage)]
        if settle is not None:
            self._in_a_transaction(conn, copy, data, emptied, parameters, settle)
            return
        with autocommitting(conn):
            try:
                with conn.cursor() as cur:
                    cur.copy_expert(copy, io.BytesIO(data))
                    cur.execute(sql.SQL("; ").join(emptied), parameters)
            except BaseException:
                if not conn.closed:  # rows left in the stage must not reach the next batch
                    with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
                        cur.execute(sql.SQL("TRUNCATE pg_temp.{}").format(stage))
                raise

    def _in_a_transaction(
        self,
        conn: Connection,
        copy: sql.Composed,
        data: bytes,
        statements: Sequence[sql.Composed],
        parameters: dict[str, object],
        settle: Callable[[Cursor], list[str]],
    ) -> None:
        try:
            with conn.cursor() as cur:
                cur.copy_expert(copy, io.BytesIO(data))
                parameters = {**parameters, "settled": settle(cur)}
                cur.execute(sql.SQL("; ").join(statements), parameters)
            conn.commit()
        except BaseException:
            rollback_quietly(conn)
            raise

    def _make(self, conn: Connection, stage: sql.Identifier, columns: str) -> None:
        """Make ``stage`` on this connection, once: one round trip, outside any transaction."""
        if stage.string in self._made:
            return
        with autocommitting(conn), conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({})").format(stage, sql.SQL(columns)))
        self._made.add(stage.string)
