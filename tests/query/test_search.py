"""Vector indexes and search: the right neighbours with the real model, exact and HNSW agreeing."""

from __future__ import annotations

import pytest

from embedlib import ConfigError, Ingestor, ModelError, SchemaError
from embedlib.store.schema import SIDE_TABLES
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli

# A small labelled set: sentences by topic, and queries whose right answers are their topic's rows.
TOPICS = {
    "compression": [
        "Compress and decompress files with gzip.",
        "A fast archiver that packs directories into zip files.",
        "Library for LZ4 lossless data compression.",
    ],
    "web browsing": [
        "A graphical web browser with tabs and bookmarks.",
        "Text-mode browser for viewing HTML pages in a terminal.",
        "Browser extension that blocks advertisements on websites.",
    ],
    "databases": [
        "Relational database server with SQL support.",
        "Client library for connecting to PostgreSQL databases.",
        "Embedded key-value store for fast lookups on disk.",
    ],
    "music": [
        "Audio player for MP3 and FLAC music collections.",
        "Software synthesizer that plays MIDI files.",
        "Tool for tagging and organising songs in a music library.",
    ],
    "email": [
        "Mail client for reading and sending email over IMAP.",
        "SMTP server that delivers mail between hosts.",
        "Spam filter that scores incoming email messages.",
    ],
}
QUERIES = {
    "compression": ["shrink a file so it takes less space", "unpack a .tar.gz archive"],
    "web browsing": ["open a website", "surf the internet"],
    "databases": ["store records and run SQL queries", "a database for my application"],
    "music": ["listen to songs", "play an audio file"],
    "email": ["send a message to a colleague's inbox", "read my mail"],
}


@pytest.mark.model
def test_search_finds_the_right_topic_for_each_query(dsn, tables):
    texts = [text for sentences in TOPICS.values() for text in sentences]
    topic_of = {text: topic for topic, sentences in TOPICS.items() for text in sentences}
    table = tables.source(texts)
    ingestor = Ingestor(dsn, table=table)
    ingestor.run()
    hits = 0
    for topic, queries in QUERIES.items():
        for query in queries:
            matches = ingestor.search(query, k=3)
            assert [m.distance for m in matches] == sorted(m.distance for m in matches)
            hits += topic_of[matches[0].text] == topic
    print(f"\nlabelled set: top-1 in the right topic for {hits} of 10 queries")
    assert hits >= 9, f"top-1 in the right topic for {hits} of 10 queries"


@pytest.mark.model
def test_hnsw_agrees_with_exact_search_and_reports_recall(dsn, tables, sample_texts, conn):
    table = tables.source(sample_texts)
    ingestor = Ingestor(dsn, table=table)
    ingestor.run()
    queries = [text.split(" - ")[0].rsplit(" ", 1)[0] or text for text in sample_texts[5:2000:40]]  # 50 queries
    exact = [ingestor.search(query, k=10) for query in queries]
    built = ingestor.build_index("hnsw", "cosine")
    assert built.created and built.rows == len(sample_texts)
    assert _plan_uses(conn, table, built.name)
    approximate = [ingestor.search(query, k=10) for query in queries]
    top1 = sum(e[0].id == a[0].id for e, a in zip(exact, approximate, strict=True))
    recall = sum(len({m.id for m in e} & {m.id for m in a}) for e, a in zip(exact, approximate, strict=True))
    recall_at_10 = recall / (10 * len(queries))
    print(f"\nHNSW against exact search, {len(queries)} queries over {len(sample_texts)} rows: "
          f"top-1 agrees {top1}/{len(queries)}, recall@10 {recall_at_10:.3f}")  # fmt: skip
    assert top1 >= len(queries) - 2
    assert recall_at_10 >= 0.9


def test_ingest_builds_the_index_after_the_load_once(dsn, tables, conn):
    table = tables.source([f"indexed sentence {i}" for i in range(300)])
    report = Ingestor(dsn, table=table, model=HashEncoder(16), index="ivfflat", metric="l2").run()
    assert report.rows == 300 and report.index == f"{table}_embeddings_ivfflat_l2"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.amname, o.opcname, c.reloptions FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
            "JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_opclass o ON o.oid = i.indclass[0] WHERE c.relname = %s",
            (report.index,),
        )
        assert cur.fetchone() == ("ivfflat", "vector_l2_ops", ["lists=10"])
    again = Ingestor(dsn, table=table, model=HashEncoder(16), index="ivfflat", metric="l2")
    assert again.run().rows == 0 and not again.build_index().created  # found, not rebuilt


def test_search_refuses_another_models_vectors_and_bad_input(dsn, tables):
    table = tables.source(["some text", "more text"])
    with pytest.raises(SchemaError, match="does not exist yet: run embedlib ingest first"):
        Ingestor(dsn, table=table, model=HashEncoder(16)).search("text")
    Ingestor(dsn, table=table, model=HashEncoder(16)).run()
    other = HashEncoder(16, name="other-encoder")
    with pytest.raises(ModelError, match="holds vectors of 'hash-encoder', not of 'other-encoder'"):
        Ingestor(dsn, table=table, model=other).search("text")
    # checked before the model is looked for: a model that is not even installed gets the same answer
    with pytest.raises(ModelError, match="holds vectors of 'hash-encoder', not of 'no-such-model'"):
        Ingestor(dsn, table=table, model="no-such-model").search("text")
    ingestor = Ingestor(dsn, table=table, model=HashEncoder(16))
    assert ingestor.search("some text", k=1)[0].text == "some text"  # the same text: distance 0
    with pytest.raises(ConfigError, match="k must be a whole number >= 1"):
        ingestor.search("text", k=0)
    with pytest.raises(ConfigError, match="unknown metric 'hamming'"):
        ingestor.search("text", metric="hamming")


def test_cli_index_and_search(dsn, tables):
    table = tables.source(["alpha beta", "gamma delta", "epsilon"])
    assert_clean_failure(run_cli("index", table, dsn=dsn), "does not exist yet")
    assert_clean_failure(run_cli("search", table, "alpha", dsn=dsn), "does not exist yet")
    ingest = run_cli("ingest", table, "--index", "hnsw", "-q", dsn=dsn)
    assert ingest.returncode == 0, ingest.stderr
    assert f"index: {table}_embeddings_hnsw_cosine" in ingest.stdout
    result = run_cli("index", table, "-q", dsn=dsn)
    assert result.returncode == 0 and "exists already" in result.stdout
    result = run_cli("search", table, "alpha beta", "-k", "2", dsn=dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split(maxsplit=2)[1:] == ["1", "alpha beta"]
    assert_clean_failure(run_cli("search", table, "x", "-k", "0", dsn=dsn), "expected a whole number >= 1")


def _plan_uses(conn, table: str, index: str, target: str | None = None) -> bool:  # type: ignore[no-untyped-def]
    """Whether a nearest-neighbour query on the target is planned through ``index``."""
    target = target or f"{table}_embeddings"
    with conn.cursor() as cur:
        cur.execute(
            f'EXPLAIN SELECT id FROM "{target}" WHERE model = %s '
            f'ORDER BY embedding <=> (SELECT embedding FROM "{target}" LIMIT 1) LIMIT 10',
            ("all-MiniLM-L6-v2",),
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    return index in plan


@pytest.mark.model
def test_halfvec_halves_storage_at_a_measured_recall_cost(dsn, tables, sample_texts, conn):
    """The sample set stored as vector and as halfvec: the half target's neighbours against the float's."""
    table = tables.source(sample_texts)
    half = f"{table}_half"
    tables.created += [half, *(f"{half}_{kind}" for kind in SIDE_TABLES)]
    exact = Ingestor(dsn, table=table)
    exact.run()
    halved = Ingestor(dsn, table=table, target=half, dtype="half")
    halved.run()
    queries = [text.split(" - ")[0].rsplit(" ", 1)[0] or text for text in sample_texts[7:2000:40]]  # 50 queries
    truth = [{m.id for m in exact.search(query, k=10)} for query in queries]
    tops = [exact.search(query, k=1)[0].text for query in queries]  # text: the sample repeats a few
    figures = []
    for label in ("halfvec exact", "halfvec HNSW"):
        if label == "halfvec HNSW":
            assert halved.build_index("hnsw", "cosine").created
            assert _plan_uses(conn, table, f"{half}_hnsw_cosine", target=half)
        found = [halved.search(query, k=10) for query in queries]
        top1 = sum(f[0].text == t for f, t in zip(found, tops, strict=True))
        recall = sum(len(t & {m.id for m in f}) for f, t in zip(found, truth, strict=True)) / (10 * len(queries))
        figures.append(f"{label}: top-1 agrees {top1}/{len(queries)}, recall@10 {recall:.3f}")
        assert top1 >= len(queries) - 2 and recall >= 0.9
    with conn.cursor() as cur:
        cur.execute(
            "SELECT avg(pg_column_size(f.embedding)), avg(pg_column_size(h.embedding)), "
            "pg_table_size(%s::regclass), pg_table_size(%s::regclass) "
            f'FROM "{table}_embeddings" f JOIN "{half}" h USING (id)',
            (f'"{table}_embeddings"', f'"{half}"'),
        )
        float_bytes, half_bytes, float_table, half_table = cur.fetchone()
    print(f"\nagainst exact float search, {len(queries)} queries over {len(sample_texts)} rows: " + "; ".join(figures))
    print(f"vector bytes per row {float_bytes:.0f} -> {half_bytes:.0f}; table {float_table} -> {half_table} bytes")
    assert half_bytes < 0.51 * float(float_bytes) and half_table < 0.7 * float_table


class _ZeroForQueries(HashEncoder):
    """Right for the stored texts, the zero vector for anything asking for 'query'."""

    def encode(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode(texts)
        vectors[[i for i, text in enumerate(texts) if "query" in text]] = 0
        return vectors


def test_a_query_vector_with_no_direction_is_refused_not_searched(dsn, tables):
    table = tables.source(["alpha", "beta", "gamma"])
    ingestor = Ingestor(dsn, table=table, model=_ZeroForQueries(), executor="serial")
    assert ingestor.run().rows == 3
    assert ingestor.search("alpha", k=1)[0].text == "alpha"
    with pytest.raises(ModelError, match="cannot be searched with: the model returned the zero vector"):
        ingestor.search("a query", k=2)


def test_an_unknown_metric_is_refused_even_without_an_index(dsn):
    with pytest.raises(ConfigError, match="metric"):
        Ingestor(dsn, table="t", metric="dot")
