"""The real all-MiniLM-L6-v2 model on small data, through a real PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import Ingestor

pytestmark = pytest.mark.model


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_match_sentence_transformers(dsn, tables, sample_texts, st_model):
    texts = [*sample_texts[:80], " ".join(sample_texts[80:95])]  # short ones and one long mixed-length text
    table = tables.source(texts)
    report = Ingestor(dsn, table=table, batch_size=16).run()
    assert report.rows == len(texts)
    stored = tables.embeddings(table)
    expected = st_model.encode(texts, batch_size=32)
    for i, vector in enumerate(expected, start=1):
        assert cosine(stored[str(i)], vector) >= 0.999


def test_rerun_encodes_nothing_and_changed_text_is_reembedded(dsn, conn, tables, sample_texts, st_model):
    table = tables.source(sample_texts[:30])
    first = Ingestor(dsn, table=table).run()
    assert (first.rows, first.encoded) == (30, 30)
    again = Ingestor(dsn, table=table).run()
    assert (again.rows, again.encoded, again.pending) == (0, 0, 0)

    before = tables.embeddings(table)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET text = %s WHERE id = 7").format(sql.Identifier(table)), ("a brand new text",)
        )
    changed = Ingestor(dsn, table=table).run()
    assert (changed.rows, changed.encoded) == (1, 1)
    after = tables.embeddings(table)
    assert cosine(after["7"], st_model.encode(["a brand new text"])[0]) >= 0.999
    assert all(np.array_equal(after[k], before[k]) for k in before if k != "7")


def test_text_that_becomes_blank_loses_its_stale_vector(dsn, conn, tables):
    table = tables.source(["kept", "to be blanked", "to be nulled"])
    Ingestor(dsn, table=table).run()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = ' ' WHERE id = 2").format(sql.Identifier(table)))
        cur.execute(sql.SQL("UPDATE {} SET text = NULL WHERE id = 3").format(sql.Identifier(table)))
    report = Ingestor(dsn, table=table).run()
    assert (report.rows, report.skipped) == (0, 2)
    assert sorted(tables.embeddings(table)) == ["1"]


def test_metrics_are_those_of_the_text(dsn, tables, st_model):
    long_text = "word " * 400  # far past the model's 256 tokens
    texts = ["short one", long_text, "short one", "héllo wörld"]
    table = tables.source(texts)
    Ingestor(dsn, table=table).run()
    rows = tables.rows(table, "id, model, char_length, token_count, truncated, norm, frequency, text_hash")
    tokenizer = st_model.tokenizer
    for (_, model, chars, tokens, truncated, norm, frequency, text_hash), text in zip(rows, texts, strict=True):
        assert model == "all-MiniLM-L6-v2"
        assert chars == len(text)
        assert tokens == len(tokenizer(text)["input_ids"])
        assert truncated == (tokens > st_model.max_seq_length)
        assert norm == pytest.approx(1.0, abs=1e-3)  # this model normalises its output
        assert frequency == texts.count(text)
        assert len(text_hash) == 32
    assert [r[4] for r in rows] == [False, True, False, False]


def test_hostile_text_is_embedded_and_blank_rows_are_skipped(dsn, tables):
    texts = [
        "emoji 🚀🔥 are fine",
        "control\x01\x07\x1b characters\ttoo",
        "right-to-left: שלום עולם مرحبا بالعالم",
        ("lorem ipsum dolor sit amet " * 4000)[:100_000],  # 100 KB of words
        None,
        "",
        "   \n\t ",
        "\u00a0\u2003",  # unicode spaces only
    ]
    table = tables.source(texts)
    report = Ingestor(dsn, table=table).run()
    assert (report.rows, report.skipped, report.failed) == (4, 4, 0)
    rows = tables.rows(table, "id, truncated, char_length")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[3][1:] == (True, 100_000)


def test_metrics_only_recomputes_without_encoding(dsn, conn, tables, sample_texts):
    table = tables.source(sample_texts[:20])
    Ingestor(dsn, table=table).run()
    before = tables.rows(table, "id, embedding::text, char_length, token_count, truncated, norm, frequency")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET char_length = 0, token_count = NULL, truncated = NULL, norm = 0, frequency = 9"
            ).format(sql.Identifier(f"{table}_embeddings"))
        )
    report = Ingestor(dsn, table=table, metrics_only=True, executor="threaded", workers=2).run()
    assert (report.rows, report.encoded) == (20, 0)
    after = tables.rows(table, "id, embedding::text, char_length, token_count, truncated, norm, frequency")
    assert [r[:5] for r in after] == [r[:5] for r in before]
    assert [r[5] for r in after] == pytest.approx([r[5] for r in before], abs=1e-5)
    assert [r[6] for r in after] == [r[6] for r in before]
