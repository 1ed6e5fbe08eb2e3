"""Counting round trips to the server: what a distant database charges for.

With the database 20 ms away a round trip costs more than writing a batch,
so embedlib counts them (``IngestReport.round_trips``, shown by ``--debug``)
and spends as few as it can: a lease is one round trip, a batch of new rows
two (a COPY), a batch written again three (see ``store.staging``).
Every connection ``session.connect`` opens is a ``CountingConnection``.

What counts as one: a statement (``execute``); the ``BEGIN`` psycopg2 sends
before the first statement of a transaction; a ``COMMIT`` or ``ROLLBACK``
with a transaction open; a ``COPY ... TO STDOUT``. A ``COPY ... FROM STDIN``
is two: the server answers the statement before it takes the data.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg2.extensions

_READY = psycopg2.extensions.STATUS_READY


class CountingCursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> None:
        cast(CountingConnection, self.connection).count_statement()
        super().execute(query, vars)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        cast(CountingConnection, self.connection).count_statement(2 if hasattr(file, "read") else 1)
        super().copy_expert(sql, file, size)


class CountingConnection(psycopg2.extensions.connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips = 0
        self.cursor_factory = CountingCursor

    def count_statement(self, trips: int = 1) -> None:
        opens_transaction = not self.autocommit and self.status == _READY
        self.round_trips += trips + opens_transaction

    def commit(self) -> None:
        self.round_trips += self.status != _READY
        super().commit()

    def rollback(self) -> None:
        self.round_trips += self.status != _READY
        super().rollback()


def round_trips(conn: Any) -> int:
    """Round trips ``conn`` has made (0 for a connection that does not count them)."""
    return int(getattr(conn, "round_trips", 0))
