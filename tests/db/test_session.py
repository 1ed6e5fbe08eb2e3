"""The database layer against a real PostgreSQL with pgvector."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import Ingestor, SchemaError
from embedlib.db import copybin
from embedlib.db.session import redact
from embedlib.testing import HashEncoder


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://user:pa55word@host:5432/db", "pa55word"),
        ("could not connect: host=h user=u password=topsecret dbname=d", "topsecret"),
        ("password='quoted secret' host=h", "quoted secret"),
    ],
)
def test_redact_removes_passwords(text, secret):
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_redact_removes_the_dsn_password_anywhere():
    assert redact("server said hunter22 twice: hunter22", "postgresql://u:hunter22@h/d") == (
        "server said *** twice: ***"
    )


def test_binary_copy_round_trips_through_postgresql(conn):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    texts = [f"row {i} ✓ ünïcödé" * (i % 4) for i in range(50)]
    data = copybin.payload(
        [copybin.int4(np.arange(50)), copybin.vector(vectors), copybin.text(texts), copybin.boolean(np.arange(50) % 2)]
    )
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE copy_check (n int4, v vector(384), t text, b bool)")
        cur.copy_expert("COPY copy_check FROM STDIN (FORMAT binary)", io.BytesIO(data))
        cur.execute("SELECT n, v::text, t, b FROM copy_check ORDER BY n")
        rows = cur.fetchall()
        cur.execute("DROP TABLE copy_check")
    assert [r[0] for r in rows] == list(range(50))
    assert [r[2] for r in rows] == texts
    assert [r[3] for r in rows] == [bool(i % 2) for i in range(50)]
    stored = np.array([r[1].strip("[]").split(",") for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(stored, vectors)


@pytest.mark.parametrize(
    ("id_type", "ids"),
    [
        ("text", ["b", "a", "c c", "ä"]),
        ("uuid", ["00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001"]),
        ("numeric(10,2)", ["1.50", "0.25", "10.00"]),
    ],
)
def test_any_orderable_id_type(dsn, conn, tables, id_type, ids):
    name = tables.name("ids")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, text text)").format(sql.Identifier(name), sql.SQL(id_type))
        )
        for i, row_id in enumerate(ids):
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(name)), (row_id, f"text {i}"))
    report = Ingestor(dsn, table=name, model=HashEncoder(), batch_size=1, window_size=1).run()
    assert report.rows == len(ids)
    assert sorted(tables.embeddings(name)) == sorted(ids)
    with conn.cursor() as cur:  # a blanked text drops its vector, found by the id's own type
        cur.execute(sql.SQL("UPDATE {} SET text = '' WHERE text = 'text 0'").format(sql.Identifier(name)))
    Ingestor(dsn, table=name, model=HashEncoder()).run()
    assert sorted(tables.embeddings(name)) == sorted(ids[1:])


def test_schema_qualified_source(dsn, conn, tables):
    schema = tables.name("schema")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        cur.execute(
            sql.SQL("CREATE TABLE {}.docs (id int PRIMARY KEY, body varchar(50))").format(sql.Identifier(schema))
        )
        cur.execute(sql.SQL("INSERT INTO {}.docs VALUES (1, 'a'), (2, 'b')").format(sql.Identifier(schema)))
    try:
        report = Ingestor(dsn, table=f"{schema}.docs", text_column="body", model=HashEncoder()).run()
        assert report.rows == 2 and report.target == f"{schema}.docs_embeddings"
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_target_of_another_dimension_is_refused(dsn, tables):
    table = tables.source(["one", "two"])
    Ingestor(dsn, table=table, model=HashEncoder(dimension=8, name="small")).run()
    with pytest.raises(SchemaError, match="8-dimensional"):
        Ingestor(dsn, table=table, model=HashEncoder(dimension=16, name="large")).run()
    assert len(tables.embeddings(table)) == 2


def test_a_different_model_reembeds(dsn, tables):
    table = tables.source(["one", "two"])
    Ingestor(dsn, table=table, model=HashEncoder(name="a")).run()
    report = Ingestor(dsn, table=table, model=HashEncoder(name="b")).run()
    assert report.encoded == 2
    assert {r[0] for r in tables.rows(table, "model")} == {"b"}


def test_frequency_follows_new_duplicates(dsn, conn, tables):
    table = tables.source(["same", "other"])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} VALUES (3, 'same'), (4, 'same')").format(sql.Identifier(table)))
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert tables.rows(table, "id, frequency") == [(1, 3), (2, 1), (3, 3), (4, 3)]


@pytest.mark.skipif(bool(os.environ.get("EMBEDLIB_TEST_DSN")), reason="checks the embedded server's settings")
def test_the_embedded_server_is_set_up_for_bulk_writes(conn):
    from embedlib.db.embedded import SERVER_SETTINGS

    with conn.cursor() as cur:
        for name, value in SERVER_SETTINGS.items():
            cur.execute("SELECT current_setting(%s)", (name,))
            assert cur.fetchone()[0] == value
