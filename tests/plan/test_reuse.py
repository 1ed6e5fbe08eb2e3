"""Each distinct text is encoded once: folded within a run, reused from the target across runs."""

from __future__ import annotations

import hashlib

import numpy as np
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.source.tables import inspect_source
from embedlib.store.metrics import TextMetrics
from embedlib.store.schema import existing_target
from embedlib.store.sink import Sink
from embedlib.testing import HashEncoder


def add_rows(conn, table: str, rows: list[tuple[int, str]]) -> None:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table)), rows)


def test_a_text_embedded_for_another_row_is_reused_not_encoded(dsn, conn, tables):
    table = tables.source(["alpha", "beta"])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    add_rows(conn, table, [(3, "alpha"), (4, "gamma")])
    report = Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert (report.rows, report.encoded) == (2, 1)  # "alpha" came from the target
    stored = tables.embeddings(table)
    assert np.array_equal(stored["3"], stored["1"])
    assert tables.rows(table, "id, frequency") == [(1, 2), (2, 1), (3, 2), (4, 1)]


def test_frequency_drops_back_when_a_duplicate_goes(dsn, conn, tables):
    table = tables.source(["same", "same", "other"])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert tables.rows(table, "id, frequency") == [(1, 2), (2, 2), (3, 1)]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = 'changed' WHERE id = 2").format(sql.Identifier(table)))
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert tables.rows(table, "id, frequency") == [(1, 1), (2, 1), (3, 1)]


def test_texts_in_flight_are_deferred_then_reused_within_the_limit(dsn, tables):
    # Every text appears in two windows far enough apart to be in flight together on the pipelined executor.
    texts = [f"text {i % 15}" for i in range(200)]
    table = tables.source(texts)
    ingest = Ingestor(dsn, table=table, model=HashEncoder(), executor="pipelined", batch_size=5, window_size=10)
    first = ingest.run(limit=60)
    assert (first.rows, first.encoded) == (60, 15)
    assert set(tables.embeddings(table)) == {str(i) for i in range(1, 61)}
    rest = ingest.run()
    assert (rest.rows, rest.encoded) == (140, 0)


def test_new_rows_fall_back_to_the_upsert_when_a_row_appeared_since_read(dsn, conn, tables):
    table = tables.source(["one"])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    target = existing_target(conn, inspect_source(conn, table, "id", "text"), None)
    assert target is not None
    encoder = HashEncoder()
    sink = Sink(dsn, target, encoder.name)
    try:
        vectors = encoder.encode(["two"])
        metrics = TextMetrics.of(encoder, ["two"])
        two = hashlib.md5(b"two").hexdigest()
        sink.write_embeddings(["1"], [two], vectors, metrics, np.array([1]), new_rows=True)  # id 1 exists
    finally:
        sink.close()
    assert tables.rows(table, "id, text_hash") == [(1, two)]
    assert np.array_equal(tables.embeddings(table)["1"], vectors[0])


def test_rows_appended_past_the_highest_stored_id_are_the_only_work(dsn, conn, tables):
    # ids 1..12 stored; the highest is 12 by number, though "9" sorts after "12" as text
    table = tables.source([f"row {i}" for i in range(1, 13)])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    add_rows(conn, table, [(13, "row 13"), (14, "row 1")])
    report = Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert (report.pending, report.rows, report.encoded) == (2, 2, 1)
    assert len(tables.embeddings(table)) == 14
