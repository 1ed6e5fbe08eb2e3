"""Texts longer than the model's window: how many were cut is reported; or they are cut into chunks,
each embedded, re-encoded only where an edit touches them, and searched by their best chunk."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.errors import ConfigError
from embedlib.source.loader import sample_lines
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli


def test_a_run_reports_the_rows_cut_at_the_models_window(dsn, tables):
    long_text = " ".join(f"word{i}" for i in range(HashEncoder.max_tokens + 10))  # one "token" a word
    table = tables.source(["short", long_text, long_text, "also short"])
    report = Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert (report.rows, report.encoded, report.truncated) == (4, 3, 2)  # rows, not texts: both are cut
    assert "2 rows are longer than the model's window" in report.summary() and "--chunk-tokens" in report.summary()
    assert json.loads(report.to_json())["truncated"] == 2
    assert [truncated for (truncated,) in tables.rows(table, "truncated")] == [False, True, True, False]


SENTENCES = [f"Sentence {i} says something about topic {i % 7}." for i in range(400)]


def document(first: int, count: int) -> str:
    """A long text of ``count`` sentences in paragraphs of five."""
    sentences = SENTENCES[first : first + count]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


def chunk_rows(conn, table: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    """The target's rows, in order; none before the target is made."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (sql.Identifier(f"{table}_embeddings").as_string(conn),))
        if cur.fetchone()[0] is None:
            return []
        cur.execute(
            sql.SQL(
                "SELECT id, chunk, start_char, end_char, chunk_hash, chunk_tokens, md5(embedding::text), text_hash, "
                "char_length, token_count, truncated FROM {} ORDER BY id, chunk"
            ).format(sql.Identifier(f"{table}_embeddings"))
        )
        return cur.fetchall()


def chunked(dsn: str, table: str, **options: object) -> Ingestor:
    return Ingestor(dsn, table=table, model=HashEncoder(), chunk_tokens=40, **options)  # type: ignore[arg-type]


def test_a_chunked_target_holds_each_rows_chunks_as_slices_of_its_text(dsn, conn, tables):
    texts = [document(0, 60), "a short text", document(100, 30)]
    table = tables.source(texts)
    report = chunked(dsn, table).run()
    assert (report.rows, report.truncated) == (3, 0)
    rows = chunk_rows(conn, table)
    by_id: dict[int, list[tuple]] = {}
    for row in rows:
        by_id.setdefault(row[0], []).append(row)
    assert [len(by_id[i]) for i in (1, 2, 3)][1] == 1 and len(by_id[1]) > 5 and len(by_id[3]) > 2
    for row_id, chunks in by_id.items():
        text = texts[row_id - 1]
        assert [c[1] for c in chunks] == list(range(len(chunks)))  # chunks 0, 1, ... of each row
        for _, _, start, end, chunk_hash, tokens, _, text_hash, char_length, token_count, truncated in chunks:
            assert chunk_hash == hashlib.md5(text[start:end].encode()).hexdigest() and tokens <= 40
            assert (text_hash, char_length, truncated) == (hashlib.md5(text.encode()).hexdigest(), len(text), False)
            assert token_count == len(text.split())  # the row's own count, on each of its chunks
        assert " ".join(text[c[2] : c[3]] for c in chunks).split() == text.split()  # nothing left out
    again = chunked(dsn, table).run()
    assert (again.rows, again.encoded) == (0, 0)
    with conn.cursor() as cur:  # a blank row on an up-to-date target: no model is loaded for it
        cur.execute(sql.SQL("UPDATE {} SET text = '' WHERE id = 2").format(sql.Identifier(table)))
    blanked = chunked(dsn, table).run()
    assert (blanked.rows, blanked.skipped) == (0, 1)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = 'a short text' WHERE id = 2").format(sql.Identifier(table)))
    chunked(dsn, table).run()
    status = chunked(dsn, table).status()  # rows, not chunks
    assert (status.rows, status.embedded, status.pending) == (3, 3, 0)


def test_an_edit_reencodes_only_the_chunks_it_touches_and_shared_paragraphs_are_encoded_once(dsn, conn, tables):
    long_text = document(0, 300)
    shared = document(0, 10)  # the first ten sentences of the long text, as another row's whole text
    table = tables.source([long_text, shared + "\n\nAnd one more paragraph of its own."])
    first = chunked(dsn, table).run()
    distinct = {row[4] for row in chunk_rows(conn, table)}
    assert first.encoded == len(distinct)  # the paragraphs both rows hold were encoded once
    middle = long_text.index(". ", len(long_text) // 2) + 2
    edited = long_text[:middle] + "A sentence inserted in the middle. " + long_text[middle:]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = %s WHERE id = 1").format(sql.Identifier(table)), (edited,))
    report = chunked(dsn, table).run()
    assert report.rows == 1 and 1 <= report.encoded <= 4
    assert " ".join(edited[r[2] : r[3]] for r in chunk_rows(conn, table) if r[0] == 1).split() == edited.split()


def test_search_on_a_chunked_target_returns_each_row_once_with_its_best_chunk(dsn, conn, tables):
    texts = [document(0, 50), document(50, 50), document(100, 50)]
    table = tables.source(texts)
    ingestor = chunked(dsn, table)
    ingestor.run()
    _, chunk, start, end, *_ = next(r for r in chunk_rows(conn, table) if r[0] == 3 and r[1] == 2)
    matches = ingestor.search(texts[2][start:end], k=3)  # the stand-in encoder: only the same text is near
    assert sorted(m.id for m in matches) == [1, 2, 3]  # each row once, though each holds many chunks
    best = matches[0]
    assert (best.id, best.chunk, best.start, best.end, best.text) == (3, chunk, start, end, texts[2])
    assert best.distance < 1e-6 and best.snippet == texts[2][start:end]
    ingestor.build_index("hnsw")  # an index on the chunks' vectors answers the same
    indexed = ingestor.search(texts[2][start:end], k=3)[0]
    assert (indexed.id, indexed.chunk) == (3, chunk)


def test_chunking_options_that_do_not_fit_the_target_or_the_model_are_refused(dsn, tables):
    table = tables.source([document(0, 40)])
    chunked(dsn, table).run()
    with pytest.raises(ConfigError, match="cut with --chunk-tokens 40, not --chunk-tokens 30"):
        Ingestor(dsn, table=table, model=HashEncoder(), chunk_tokens=30).run()
    assert chunked(dsn, table).run().rows == 0  # the same options: fine
    assert Ingestor(dsn, table=table, model=HashEncoder()).run().rows == 0  # none: the target's own
    plain = tables.source([document(0, 40)])
    Ingestor(dsn, table=plain, model=HashEncoder()).run()
    with pytest.raises(ConfigError, match="one vector per row"):
        chunked(dsn, plain).run()
    with pytest.raises(ConfigError, match="must be less than --chunk-tokens"):
        Ingestor(dsn, table=table, model=HashEncoder(), chunk_tokens=40, chunk_overlap=40).run()
    with pytest.raises(ConfigError, match="goes with --chunk-tokens"):
        Ingestor(dsn, table=table, model=HashEncoder(), chunk_overlap=8).run()
    too_long = tables.source([document(0, 40)])
    with pytest.raises(ConfigError, match="more than 'hash-encoder' reads"):
        Ingestor(dsn, table=too_long, model=HashEncoder(), chunk_tokens=500).run()


def test_every_executor_writes_the_same_chunks(dsn, conn, tables, executor_name):
    texts = [document(i * 20, 40) for i in range(6)] + ["short"]
    serial = tables.source(texts)
    chunked(dsn, serial, executor="serial").run()
    table = tables.source(texts)
    chunked(dsn, table, executor=executor_name, workers=2, batch_size=8).run()

    def written(name: str) -> list[tuple]:  # type: ignore[type-arg]
        return [row[:8] for row in chunk_rows(conn, name)]

    assert written(table) == written(serial)


CHUNKED_RUN = """
import sys, time
from embedlib import Ingestor
from embedlib.testing import HashEncoder

class Slow(HashEncoder):
    identity = "object HashEncoder hash-encoder"  # the stand-in's own: the next run's vectors are the same model's

    def encode(self, texts):
        time.sleep(0.02)
        return super().encode(texts)

Ingestor(sys.argv[1], table=sys.argv[2], model=Slow(), chunk_tokens=40, batch_size=4).run()
"""


def test_a_run_killed_mid_document_leaves_no_half_document_and_the_next_completes_it(dsn, conn, tables):
    texts = [document(i * 7, 60) for i in range(40)]
    table = tables.source(texts)
    proc = subprocess.Popen([sys.executable, "-c", CHUNKED_RUN, dsn, table])
    try:
        deadline = time.monotonic() + 120
        while len({row[0] for row in chunk_rows(conn, table)}) < 5:
            assert time.monotonic() < deadline and proc.poll() is None, "the run wrote nothing"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def complete(rows: list[tuple]) -> set[int]:  # type: ignore[type-arg]
        """The rows whose chunks are all there, and hold their whole text."""
        by_id: dict[int, list[tuple]] = {}  # type: ignore[type-arg]
        for row in rows:
            by_id.setdefault(row[0], []).append(row)
        return {
            i
            for i, chunks in by_id.items()
            if [c[1] for c in chunks] == list(range(len(chunks)))
            and " ".join(texts[i - 1][c[2] : c[3]] for c in chunks).split() == texts[i - 1].split()
        }

    written = {row[0] for row in chunk_rows(conn, table)}
    assert written and complete(chunk_rows(conn, table)) == written < set(range(1, 41))  # whole documents only
    report = chunked(dsn, table).run()
    assert report.rows == 40 - len(written)
    assert complete(chunk_rows(conn, table)) == set(range(1, 41))


def test_a_tracked_chunked_table_reencodes_the_chunks_an_edit_touches_and_drops_a_deleted_rows(dsn, conn, tables):
    texts = [document(0, 120), document(150, 60)]
    table = tables.source(texts)
    ingestor = chunked(dsn, table)
    ingestor.run()
    ingestor.track()
    ingestor.run()  # the full pass tracking asks for first
    middle = texts[0].index(". ", len(texts[0]) // 2) + 2
    edited = texts[0][:middle] + "One more sentence in the middle. " + texts[0][middle:]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = %s WHERE id = 1").format(sql.Identifier(table)), (edited,))
        cur.execute(sql.SQL("DELETE FROM {} WHERE id = 2").format(sql.Identifier(table)))
    report = ingestor.run()
    assert report.tracked and report.rows == 1 and 1 <= report.encoded <= 4
    assert {row[0] for row in chunk_rows(conn, table)} == {1}
    metrics = chunked(dsn, table, metrics_only=True).run()  # row metrics again, never "truncated"
    assert metrics.rows == 1 and not any(row[10] for row in chunk_rows(conn, table))


@pytest.mark.model
def test_the_command_line_chunks_and_search_json_shows_the_chunk(dsn, tables):
    sentences = sample_lines()[:80]  # real sentences: the model tells them apart
    texts = [" ".join(sentences[:40]), " ".join(sentences[40:])]
    table = tables.source(texts)
    made = run_cli("ingest", table, "--chunk-tokens", "64", "--quiet", "--json", dsn=dsn)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["rows"] == 2
    found = run_cli("search", table, sentences[55], "-k", "2", "--json", dsn=dsn)
    assert found.returncode == 0, found.stderr
    matches = [json.loads(line) for line in found.stdout.splitlines()]
    assert [m["id"] for m in matches] == [2, 1]  # each row once, the one holding the sentence first
    best = matches[0]
    assert best["snippet"] == texts[1][best["start"] : best["end"]] and sentences[55] in best["snippet"]
    refused = run_cli("ingest", table, "--chunk-tokens", "65", dsn=dsn)
    assert_clean_failure(refused, "cut with --chunk-tokens 64, not --chunk-tokens 65")
