"""Rows the model cannot embed: isolated, recorded with a reason, retried a bounded number of times."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.encode.failures import NON_FINITE, isolate_failures
from embedlib.errors import EncoderUnavailable
from embedlib.testing import FailingEncoder, HashEncoder

POISON = "poison \u2620"


def PoisonedEncoder() -> FailingEncoder:
    """Raises on any call holding POISON; returns NaN for "not a number"."""
    return FailingEncoder(poison=[POISON], nan=["not a number"])


class BrokenEncoder(HashEncoder):
    def encode(self, texts):  # type: ignore[no-untyped-def]
        raise RuntimeError("no model here")


def error_rows(conn, table: str, *, skipped: bool = False) -> list[tuple]:
    """Rows the model failed on (attempts >= 1), or with ``skipped`` the blank rows noted as skipped."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, text_hash, error, attempts FROM {} WHERE (attempts = 0) = %s ORDER BY id").format(
                sql.Identifier(f"{table}_embedding_errors")
            ),
            (skipped,),
        )
        return cur.fetchall()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.mark.parametrize("bad", [[0], [37], [99], [3, 4, 80], list(range(100))])
def test_isolate_failures_finds_exactly_the_texts_that_fail(bad):
    calls = []

    def encode(start: int, stop: int) -> np.ndarray:
        calls.append((start, stop))
        if any(start <= b < stop for b in bad):
            raise ValueError(f"bad text in {start}:{stop}")
        return np.full((stop - start, 2), start, dtype=np.float32)

    vectors, errors = isolate_failures(encode, 100, 2, worked_before=True)
    assert sorted(errors) == bad
    assert all(message.startswith("ValueError: bad text in") for message in errors.values())
    good = [i for i in range(100) if i not in bad]
    assert np.isfinite(vectors[good]).all() and np.isnan(vectors[bad]).all()
    if len(bad) == 1:
        assert len(calls) <= 2 * 7 + 1  # two halves per level, log2(100) < 7 levels


def test_isolate_failures_raises_when_the_model_never_worked():
    def encode(start: int, stop: int) -> np.ndarray:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        isolate_failures(encode, 10, 2, worked_before=False)
    _, errors = isolate_failures(encode, 10, 2, worked_before=True)
    assert len(errors) == 10


def test_bad_rows_are_recorded_and_the_rest_stored_on_every_executor(dsn, conn, tables, executor_name):
    texts = [f"row {i:03d}" for i in range(60)]
    texts[10], texts[45], texts[46] = POISON, "not a number", POISON  # ids 11, 46 and 47
    table = tables.source(texts)
    report = Ingestor(
        dsn, table=table, model=PoisonedEncoder(), executor=executor_name, workers=2, batch_size=8, window_size=20
    ).run()
    # 58 distinct texts; POISON's two rows are in different windows, and the model is tried on each
    assert (report.rows, report.failed, report.encoded) == (57, 3, 59 + 1)
    assert set(tables.embeddings(table)) == {str(i) for i in range(1, 61)} - {"11", "46", "47"}
    assert error_rows(conn, table) == [
        (11, md5(POISON), "RuntimeError: encoder exploded", 1),
        (46, md5("not a number"), NON_FINITE, 1),
        (47, md5(POISON), "RuntimeError: encoder exploded", 1),
    ]


def test_bad_rows_are_retried_up_to_max_attempts_and_again_when_their_text_changes(dsn, conn, tables):
    texts = [f"row {i}" for i in range(20)]
    texts[4] = POISON
    table = tables.source(texts)

    def run():
        return Ingestor(dsn, table=table, model=PoisonedEncoder(), batch_size=5, max_attempts=2).run()

    first = run()
    assert (first.rows, first.failed, first.given_up) == (19, 1, 0)
    second = run()  # the bad row alone is pending: tried again
    assert (second.pending, second.rows, second.failed, second.given_up) == (1, 0, 1, 0)
    assert error_rows(conn, table)[0][3] == 2
    third = run()  # failed twice: left out, not tried
    assert (third.pending, third.rows, third.failed, third.given_up) == (0, 0, 0, 1)
    assert error_rows(conn, table)[0][3] == 2
    assert "left out 1 rows" in third.summary()

    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = 'cured' WHERE id = 5").format(sql.Identifier(table)))
    fourth = run()  # a new text is a new chance; its success clears the record
    assert (fourth.pending, fourth.rows, fourth.failed, fourth.given_up) == (1, 1, 0, 0)
    assert error_rows(conn, table) == []
    assert len(tables.embeddings(table)) == 20


def test_a_model_that_fails_on_everything_stops_the_run(dsn, conn, tables):
    table = tables.source([f"row {i}" for i in range(30)])
    with pytest.raises(RuntimeError, match="no model here"):
        Ingestor(dsn, table=table, model=BrokenEncoder(), batch_size=10).run()
    assert tables.embeddings(table) == {}
    assert error_rows(conn, table) == []  # the rows are not to blame


# The real CLI and the real model, whose encode raises on one marked text.
RUN_WITH_A_POISONED_MODEL = """
import sys
from embedlib import cli
from embedlib.encode import base as encoder
model = encoder.resolve_encoder("all-MiniLM-L6-v2")
real_encode = model.encode
def encode(texts):
    if any("POISON" in text for text in texts):
        raise RuntimeError("the model choked")
    return real_encode(texts)
model.encode = encode
# Batches reach the model as the token ids the planner made: the poison is its word's ids.
poison = set(model.tokenize(["POISON"]).ids.tolist()) - set(model.tokenize([""]).ids.tolist())
real_encode_tokens = model.encode_tokens
def encode_tokens(tokens):
    if poison & set(tokens.ids.tolist()):
        raise RuntimeError("the model choked")
    return real_encode_tokens(tokens)
model.encode_tokens = encode_tokens
sys.exit(cli.main(sys.argv[1:]))
"""


def test_hostile_rows_through_the_cli(dsn, conn, tables, sample_texts):
    hostile = {
        "null": None,
        "empty": "",
        "whitespace": " \t\n\u00a0 ",
        "megabyte": "embedding " * 100_000,
        "emoji": "\U0001f600\U0001f680\U0001f9ec" * 50,
        "right-to-left": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0645\u0631\u062d\u0628\u0627",
        "control": "bell\x07 escape\x1b[31m tab\t unit\x1f",
        "raises": "POISON in the middle of a sentence",
        "zero-width": "\u200b\u200d\ufeff",
    }
    texts = list(sample_texts[:20]) + list(hostile.values())
    table = tables.source(texts)
    environment = {"EMBEDLIB_DSN": dsn, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITH_A_POISONED_MODEL, "ingest", table, "10", "--json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    print(f"\nhostile rows: {json.dumps(report)}\nstderr: {result.stderr.strip()}")
    ids = {name: str(21 + i) for i, name in enumerate(hostile)}
    stored = tables.embeddings(table)
    blank = {"null", "empty", "whitespace"}
    assert set(stored) == {str(i) for i in range(1, 21)} | {ids[n] for n in hostile if n not in blank | {"raises"}}
    assert (report["skipped"], report["failed"]) == (len(blank), 1)
    assert error_rows(conn, table) == [
        (int(ids["raises"]), md5(hostile["raises"]), "RuntimeError: the model choked", 1)
    ]
    assert [(row[0], row[1]) for row in error_rows(conn, table, skipped=True)] == [
        (int(ids[name]), md5(hostile[name] or "")) for name in ("null", "empty", "whitespace")
    ]
    assert "embedlib: warning: 1 rows failed to embed" in result.stderr
    assert "Traceback" not in result.stderr
    truncated = dict(tables.rows(table, "id::text, truncated"))
    assert truncated[ids["megabyte"]] is True


class ShrinkingEncoder(HashEncoder):
    """Right for its first call, then one dimension short: an encoder at fault, no text to blame."""

    calls = 0

    def encode(self, texts):  # type: ignore[no-untyped-def]
        ShrinkingEncoder.calls += 1
        vectors = super().encode(texts)
        return vectors if ShrinkingEncoder.calls == 1 else vectors[:, :-1]


def test_an_encoder_whose_dimension_changes_stops_the_run_and_blames_no_row(dsn, conn, tables):
    table = tables.source([f"sentence {i}" for i in range(30)])
    ShrinkingEncoder.calls = 0
    with pytest.raises(EncoderUnavailable, match="returned vectors of shape"):
        Ingestor(dsn, table=table, model=ShrinkingEncoder(), executor="serial", batch_size=10).run()
    assert len(tables.embeddings(table)) == 10  # the first batch, stored right; nothing after it
    assert error_rows(conn, table) == []


class ZeroEncoder(HashEncoder):
    """A broken model: the zero vector for every text."""

    def encode(self, texts):  # type: ignore[no-untyped-def]
        return np.zeros((len(texts), self.dimension), dtype=np.float32)


def test_a_model_that_gives_no_usable_vector_stops_the_run_not_fills_the_errors_table(dsn, conn, tables):
    table = tables.source([f"sentence {i}" for i in range(30)])
    with pytest.raises(EncoderUnavailable, match="gave no usable vector for a batch of 10 texts"):
        Ingestor(dsn, table=table, model=ZeroEncoder(), executor="serial", batch_size=10).run()
    assert tables.embeddings(table) == {}
    assert error_rows(conn, table) == []
