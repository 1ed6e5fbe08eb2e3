"""Change capture's edges: a row that changed since it was read is not written, the triggers never
fail the application's statement, and changes they could not see lead to a full pass."""

from __future__ import annotations

import hashlib

import numpy as np
import psycopg2.errors
import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.errors import SchemaError
from embedlib.source.tables import inspect_source
from embedlib.store.metrics import TextMetrics
from embedlib.store.provenance import served_target
from embedlib.store.sink import Sink
from embedlib.testing import HashEncoder
from tests.run.test_follow import source_rows, target_rows


def tracked(conn, tables, texts: list[str]) -> tuple[str, Ingestor]:  # type: ignore[no-untyped-def]
    table = tables.source(texts)
    ingestor = Ingestor(conn.dsn, table=table, model=HashEncoder())
    ingestor.run()
    ingestor.track()
    ingestor.run()  # the full pass tracking asks for first
    return table, ingestor


def execute(conn, statement: str, table: str, *params):  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(sql.Identifier(table)), params or None)
        return cur.fetchall() if cur.description else None


def test_a_row_changed_since_it_was_read_is_not_written_and_goes_back_to_the_queue(conn, tables):
    table, _ = tracked(conn, tables, ["one", "two"])
    target = served_target(conn, inspect_source(conn, table, "id", "text"), None)
    assert target is not None
    execute(conn, "UPDATE {} SET text = 'first change' WHERE id = 1", table)
    holder = 12345
    claimed = target.queue.claim(conn, holder, size=10)
    assert list(claimed) == ["1"]
    execute(conn, "UPDATE {} SET text = 'second change' WHERE id = 1", table)  # while "encoding"
    before = target_rows(conn, table)[1]
    sink = Sink(conn.dsn, target, "hash-encoder", holder=holder)
    try:
        texts = ["first change"]
        sink.write_embeddings(
            ["1"],
            [hashlib.md5(b"first change").hexdigest()],
            HashEncoder().encode(texts),
            TextMetrics.of(None, texts),
            np.ones(1, dtype=np.int64),
            new_rows=False,
            seqs=[claimed["1"]],
        )
    finally:
        sink.close()
    assert target_rows(conn, table)[1] == before  # the stale text's vector is not stored
    [(seq, holder_now)] = execute(conn, "SELECT seq, holder FROM {}", f"{table}_embedding_queue")
    assert seq > claimed["1"] and holder_now is None  # queued again, free for the next claim
    Ingestor(conn.dsn, table=table, model=HashEncoder()).run()
    assert target_rows(conn, table) == source_rows(conn, table)


def test_the_triggers_never_fail_the_applications_statement(conn, tables):
    table, ingestor = tracked(conn, tables, ["one", "two"])
    execute(conn, "ALTER TABLE {} RENAME COLUMN text TO body", table)  # the function now names a column that is gone
    execute(conn, "UPDATE {} SET body = 'changed' WHERE id = 1", table)  # still goes through
    [(value,)] = execute(conn, "SELECT count(*) FROM {} WHERE key = 'resync'", f"{table}_embedding_meta")
    assert value == 1  # and asks for a full pass instead
    with pytest.raises(SchemaError, match="text"):
        ingestor.run()  # the run itself needs its text column back


def test_changes_made_while_the_triggers_were_off_are_found(conn, tables):
    table, ingestor = tracked(conn, tables, [f"text {i}" for i in range(5)])
    execute(conn, "ALTER TABLE {} DISABLE TRIGGER USER", table)
    execute(conn, "UPDATE {} SET text = 'unseen by the queue' WHERE id = 1", table)
    report = ingestor.run()  # the triggers are off: the whole table is read
    assert (report.tracked, report.rows) == (False, 1)
    execute(conn, "UPDATE {} SET text = 'also unseen' WHERE id = 2", table)
    execute(conn, "ALTER TABLE {} ENABLE TRIGGER USER", table)
    report = ingestor.run()  # back on: one full pass first, since changes went unseen meanwhile
    assert (report.tracked, report.rows) == (True, 1)
    assert target_rows(conn, table) == source_rows(conn, table)


def test_a_partitioned_table_is_refused(conn, tables):
    table = tables.name()
    execute(conn, "CREATE TABLE {} (id bigint PRIMARY KEY, text text) PARTITION BY RANGE (id)", table)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (0) TO (100)").format(
                sql.Identifier(f"{table}_p0"), sql.Identifier(table)
            )
        )
    tables.created.insert(0, f"{table}_p0")
    with pytest.raises(SchemaError, match="partitioned"):
        Ingestor(conn.dsn, table=table, model=HashEncoder()).track()
    with pytest.raises(psycopg2.errors.UndefinedTable):
        execute(conn, "SELECT 1 FROM {}", f"{table}_embedding_queue")
