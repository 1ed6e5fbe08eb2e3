"""End-to-end ingest against the model alone, side by side in one run.

    pytest benchmarks --benchmark-only

The same 1,000 real sentences each round: the model alone (one
``SentenceTransformer.encode`` call, same batch size) is the ceiling;
embedlib adds reading, metrics and writing around it. The target is
emptied before every round, so every round encodes every row.
"""

from __future__ import annotations

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.encoder import resolve_encoder

ROWS = 1000
BATCH_SIZE = 100
MODES = [("serial", 1), ("threaded", 2), ("threaded", 4)]


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    loaded = resolve_encoder("all-MiniLM-L6-v2")
    loaded.encode(["warm up"])
    return loaded


@pytest.fixture(scope="module")
def sentences(sample_texts: list[str]) -> list[str]:
    return sample_texts[:ROWS]


def test_model_alone(benchmark, encoder, sentences):
    benchmark.group = f"ingest {ROWS} sentences"
    model = encoder._model
    benchmark.pedantic(lambda: model.encode(sentences, batch_size=BATCH_SIZE), rounds=3, warmup_rounds=1)
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.mean


@pytest.mark.parametrize(("executor", "workers"), MODES, ids=[f"{e}-{w}" for e, w in MODES])
def test_embedlib(benchmark, dsn, conn, tables, encoder, sentences, executor, workers):
    benchmark.group = f"ingest {ROWS} sentences"
    table = tables.source(sentences)
    ingestor = Ingestor(dsn, table=table, batch_size=BATCH_SIZE, executor=executor, workers=workers)

    def empty_target() -> None:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{table}_embeddings")))

    reports = []
    benchmark.pedantic(lambda: reports.append(ingestor.run()), setup=empty_target, rounds=3, warmup_rounds=1)
    assert all(report.rows == ROWS for report in reports)
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.mean
