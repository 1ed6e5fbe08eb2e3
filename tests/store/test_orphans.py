"""Rows deleted from the source lose their vectors, metrics and error records at the next run,
wherever they were: among the spans a run reads, between them, before the first or past the last."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.testing import FailingEncoder, HashEncoder


def ingest(dsn: str, table: str, limit: int | None = None, **options: object):  # type: ignore[no-untyped-def]
    options = {"model": HashEncoder(), "batch_size": 10, "window_size": 20, **options}
    return Ingestor(dsn, table=table, **options).run(limit)


def delete(conn, table: str, where: str) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} WHERE ").format(sql.Identifier(table)) + sql.SQL(where))
        return int(cur.rowcount)


def stored_ids(conn, table: str, suffix: str = "_embeddings") -> set[int]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(f"{table}{suffix}")))
        return {row_id for (row_id,) in cur.fetchall()}


@pytest.mark.parametrize(
    "where",
    [
        "id % 7 = 0",  # scattered through every span
        "id <= 15",  # before the first span the next run reads
        "id > 80",  # past the last: the tail
        "id BETWEEN 30 AND 70",  # whole spans and the gaps between what is left
        "TRUE",  # every row
    ],
)
def test_deleted_rows_lose_their_vectors_and_nothing_is_encoded_again(dsn, conn, tables, where):
    table = tables.source([f"sentence number {i}" for i in range(100)])
    assert ingest(dsn, table).rows == 100
    deleted = delete(conn, table, where)
    report = ingest(dsn, table)
    assert (report.removed, report.encoded, report.rows) == (deleted, 0, 0)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(table)))
        left = {row_id for (row_id,) in cur.fetchall()}
    assert stored_ids(conn, table) == left
    assert ingest(dsn, table).removed == 0  # a run with nothing deleted removes nothing


def test_error_records_of_deleted_rows_go_and_frequencies_follow(dsn, conn, tables):
    texts = ["poison"] * 3 + ["shared text"] * 2 + [f"own text {i}" for i in range(10)] + [None]
    table = tables.source(texts)
    first = ingest(dsn, table, model=FailingEncoder(poison=["poison"]))
    assert (first.failed, first.skipped) == (3, 1)
    assert len(stored_ids(conn, table, "_embedding_errors")) == 4  # three failures and a blank row
    delete(conn, table, "text = 'poison' OR text IS NULL OR id = 4")  # id 4: one of the two 'shared text'
    report = ingest(dsn, table, model=FailingEncoder(poison=["poison"]))
    assert report.removed == 1  # the shared text's row; the others had errors, not vectors
    assert stored_ids(conn, table, "_embedding_errors") == set()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT frequency FROM {} WHERE id = 5").format(sql.Identifier(f"{table}_embeddings")))
        assert cur.fetchone() == (1,)  # its text is no longer shared


def test_a_limited_run_removes_only_in_what_it_read(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(100)])
    ingest(dsn, table)
    delete(conn, table, "id > 90")
    with conn.cursor() as cur:  # a change early in the table, so that a limited run has work there
        cur.execute(sql.SQL("UPDATE {} SET text = 'changed' WHERE id = 1").format(sql.Identifier(table)))
    report = ingest(dsn, table, limit=1)
    assert (report.rows, report.removed) == (1, 0)  # the tail was not reached
    assert ingest(dsn, table).removed == 10
