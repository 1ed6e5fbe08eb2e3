"""halfvec storage (``dtype="half"``): what is stored, reused, indexed and refused.

Each test writes one source into a float target (the default) and a half
one (``<table>_half``), so the half target can be checked against what
PostgreSQL itself makes of the float vectors: ``embedding::halfvec``.
"""

from __future__ import annotations

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import ConfigError, Ingestor, SchemaError
from embedlib.encode.failures import BEYOND_HALF
from embedlib.store.schema import SIDE_TABLES
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli


def half_target(tables, table: str) -> str:  # type: ignore[no-untyped-def]
    """The name of ``table``'s half target, registered to be dropped after the test."""
    name = f"{table}_half"
    tables.created += [name, *(f"{name}_{kind}" for kind in SIDE_TABLES)]
    return name


def column_type(conn, table: str) -> str:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attname = 'embedding'", (f'"{table}"',))  # fmt: skip
        return str(cur.fetchone()[0])


def differing_rows(conn, table: str, half: str) -> int:  # type: ignore[no-untyped-def]
    """Rows whose half vector is not the float one as PostgreSQL rounds it, or whose metrics differ.

    ``norm`` is the stored vector's: the float16 one's, in the half target.
    """
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {float} f FULL JOIN {half} h USING (id) "
                "WHERE h.id IS NULL OR f.id IS NULL OR f.embedding::halfvec::text <> h.embedding::text "
                "OR (f.text_hash, f.char_length, f.token_count, f.frequency) "
                "IS DISTINCT FROM (h.text_hash, h.char_length, h.token_count, h.frequency) "
                "OR abs(h.norm - vector_norm(h.embedding::vector)) > 1e-6"
            ).format(float=sql.Identifier(f"{table}_embeddings"), half=sql.Identifier(half))
        )
        return int(cur.fetchone()[0])


def test_half_target_stores_what_postgres_rounds_the_float_vectors_to(dsn, tables, conn):
    texts = [f"sentence number {i % 150}" for i in range(300)]  # every text twice
    table = tables.source(texts)
    half = half_target(tables, table)
    encoder = HashEncoder(16)
    float_report = Ingestor(dsn, table=table, model=encoder, batch_size=32).run()
    half_report = Ingestor(dsn, table=table, target=half, model=encoder, batch_size=32, dtype="half").run()
    assert column_type(conn, f"{table}_embeddings") == "vector(16)"
    assert column_type(conn, half) == "halfvec(16)"
    assert (half_report.rows, half_report.encoded) == (float_report.rows, float_report.encoded) == (300, 150)
    assert differing_rows(conn, table, half) == 0

    # New rows whose texts the half target holds: their vectors are read back from it (halfvec
    # parsed from binary COPY), not encoded; changed texts go through the staging upsert.
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} SELECT id + 1000, text FROM {} WHERE id <= 50").format(
            sql.Identifier(table), sql.Identifier(table)))  # fmt: skip
        cur.execute(sql.SQL("UPDATE {} SET text = text || ' changed' WHERE id BETWEEN 291 AND 300").format(
            sql.Identifier(table)))  # fmt: skip
    float_report = Ingestor(dsn, table=table, model=encoder, batch_size=32).run()
    half_report = Ingestor(dsn, table=table, target=half, model=encoder, batch_size=32).run()  # dtype kept
    assert (half_report.rows, half_report.encoded) == (float_report.rows, float_report.encoded) == (60, 10)
    assert differing_rows(conn, table, half) == 0

    # Metrics recomputed from the stored halfvec (norm through a cast to vector).
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET norm = 0").format(sql.Identifier(half)))
    assert Ingestor(dsn, table=table, target=half, model=encoder, metrics_only=True).run().rows == 350
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT min(norm), max(norm) FROM {}").format(sql.Identifier(half)))
        low, high = cur.fetchone()
    assert 0.999 < low <= high < 1.001  # HashEncoder's vectors are unit vectors, to float16's precision


def test_half_target_is_indexed_and_searched_with_halfvec_operators(dsn, tables, conn):
    table = tables.source([f"indexed sentence {i}" for i in range(200)])
    half = half_target(tables, table)
    ingestor = Ingestor(dsn, table=table, target=half, model=HashEncoder(16), dtype="half", index="hnsw")
    assert ingestor.run().index == f"{half}_hnsw_cosine"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT o.opcname FROM pg_index i JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "WHERE i.indexrelid = %s::regclass", (f'"{half}_hnsw_cosine"',))  # fmt: skip
        assert cur.fetchone() == ("halfvec_cosine_ops",)
    matches = ingestor.search("indexed sentence 17", k=3)
    assert matches[0].text == "indexed sentence 17" and matches[0].distance < 1e-3


def test_a_dtype_the_target_does_not_store_is_refused_before_any_write(dsn, tables, conn):
    table = tables.source(["one", "two", "three"])
    half = half_target(tables, table)
    Ingestor(dsn, table=table, target=half, model=HashEncoder(16), dtype="half").run()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} VALUES (4, 'four')").format(sql.Identifier(table)))
    with pytest.raises(SchemaError, match=r"stores halfvec\(16\) \(half\), not --dtype float"):
        Ingestor(dsn, table=table, target=half, model=HashEncoder(16), dtype="float").run()
    result = run_cli("ingest", table, "--target", half, "--dtype", "float", "-q", dsn=dsn)
    assert_clean_failure(result, "not --dtype float; choose another --target, or convert it first")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM {}".format(f'"{half}"'))
        assert cur.fetchone() == (3,)  # the fourth row waits for a run with the target's own type
    assert Ingestor(dsn, table=table, target=half, model=HashEncoder(16)).run().rows == 1  # its own type
    with pytest.raises(ConfigError, match="unknown dtype 'double'"):
        Ingestor(dsn, table=table, dtype="double")
    assert_clean_failure(run_cli("ingest", table, "--dtype", "double", dsn=dsn), "invalid choice: 'double'")


class _OverflowingEncoder(HashEncoder):
    """Vectors of texts starting with 'huge' have values float16 cannot hold."""

    def encode(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode(texts)
        vectors[[text.startswith("huge") for text in texts]] *= np.float32(1e6)
        return vectors


def test_vectors_beyond_halfs_range_are_recorded_as_failures_not_stored(dsn, tables, conn):
    texts = [f"text {i}" for i in range(40)]
    texts[6] = texts[30] = "huge text"
    table = tables.source(texts)
    half = half_target(tables, table)
    report = Ingestor(dsn, table=table, target=half, model=_OverflowingEncoder(16), dtype="half").run()
    assert (report.rows, report.failed) == (38, 2)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, error FROM {} ORDER BY id").format(sql.Identifier(f"{half}_errors")))
        assert cur.fetchall() == [(7, BEYOND_HALF), (31, BEYOND_HALF)]


@pytest.mark.model
def test_cli_ingest_dtype_half(dsn, tables, conn):
    table = tables.source(["a first sentence", "a second one", "a first sentence"])
    result = run_cli("ingest", table, "--dtype", "half", "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert '"rows": 3' in result.stdout and '"encoded": 2' in result.stdout
    assert column_type(conn, f"{table}_embeddings") == "halfvec(384)"
