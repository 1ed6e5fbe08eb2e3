""" "Pending" means there is work: blank rows are skipped once and known as skipped, NULL ids are reported."""

from __future__ import annotations

import logging

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.encode import base as encoder
from embedlib.testing import HashEncoder


def ingest(dsn: str, table: str, model: object = None, limit: int | None = None, **options) -> object:
    return Ingestor(dsn, table=table, model=model or HashEncoder(), executor="serial", **options).run(limit)


def stored_ids(conn, table: str) -> set[int]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(f"{table}_embeddings")))
        return {row[0] for row in cur.fetchall()}


def test_blank_rows_are_skipped_once_and_do_not_stall_a_limit(dsn, conn, tables):
    texts = [None, "", "   ", "\t\n"] * 3 + [f"text number {i}" for i in range(20)]
    table = tables.source(texts)
    first = ingest(dsn, table, limit=10)
    assert (first.rows, first.skipped) == (10, 12)  # the blank rows before them did not use up the limit
    second = ingest(dsn, table, limit=10)
    assert (second.rows, second.skipped, second.pending) == (10, 0, 10)
    third = ingest(dsn, table)
    assert (third.pending, third.rows, third.skipped) == (0, 0, 0)
    assert stored_ids(conn, table) == set(range(13, 33))


def test_a_rerun_over_blank_rows_does_not_load_the_model(dsn, conn, tables, monkeypatch):
    table = tables.source(["a sentence to embed", None, "  ", "another sentence"])
    first = ingest(dsn, table, model="all-MiniLM-L6-v2")
    assert (first.rows, first.skipped) == (2, 2)

    def refuse(*args: object) -> None:
        raise AssertionError("the model was loaded with nothing to encode")

    monkeypatch.setattr(encoder, "load_sentence_transformer", refuse)
    again = ingest(dsn, table, model="all-MiniLM-L6-v2")
    assert (again.pending, again.rows, again.skipped) == (0, 0, 0)


def test_a_text_blanked_loses_its_vector_and_comes_back_when_filled(dsn, conn, tables):
    table = tables.source(["kept", "to be blanked", "also kept"])
    ingest(dsn, table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = ' ' WHERE id = 2").format(sql.Identifier(table)))
    report = ingest(dsn, table)
    assert (report.rows, report.skipped) == (0, 1)
    assert stored_ids(conn, table) == {1, 3}
    assert ingest(dsn, table).pending == 0
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = 'written again' WHERE id = 2").format(sql.Identifier(table)))
    assert ingest(dsn, table).rows == 1
    assert stored_ids(conn, table) == {1, 2, 3}


def test_rows_with_a_null_id_are_reported_not_silently_left(dsn, conn, tables, caplog):
    name = tables.name("nullable")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (id bigint UNIQUE, text text)").format(sql.Identifier(name)))
        cur.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'one'), (NULL, 'no id'), (NULL, 'no id either'), (2, 'two')").format(
                sql.Identifier(name)
            )
        )
    with caplog.at_level(logging.WARNING):
        report = ingest(dsn, name)
    assert (report.rows, report.null_ids) == (2, 2)
    assert "2 rows of public." in caplog.text and "NULL 'id'" in caplog.text
    assert "left out 2 rows whose id is NULL" in report.summary()
    assert stored_ids(conn, name) == {1, 2}


@pytest.mark.parametrize("metrics_only", [False, True])
def test_pending_is_exact_and_counts_no_row_twice(dsn, conn, tables, metrics_only):
    table = tables.source(["x", "y", None, "z"])
    ingest(dsn, table)
    report = ingest(dsn, table, metrics_only=metrics_only)
    assert report.pending == (3 if metrics_only else 0)
