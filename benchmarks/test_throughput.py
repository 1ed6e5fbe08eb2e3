"""The throughput comparisons of ``benchmarks/compare.py``, as pytest-benchmark groups.

    pytest benchmarks --benchmark-only        (about 15 minutes here)

Each group holds a baseline and embedlib, run in the same session on the
same table; compare within a group (``rows_per_s`` is in each result's
extra info). ``python -m benchmarks.compare`` prints the same comparisons
as tables with ratios, and the database path at 1,000,000 rows.
"""

from __future__ import annotations

import pytest

from benchmarks import original, workloads
from benchmarks.dbpath import BATCH_SIZE as DB_BATCH_SIZE
from benchmarks.dbpath import WINDOW_SIZE, raw_copy, raw_payloads
from benchmarks.measure import Database, ingest_once, warm_model
from embedlib import ProcessExecutor
from embedlib.testing import HashEncoder

BATCH_SIZE = 100

WORKLOADS = {
    "short": lambda: workloads.short_distinct(1000),
    "mixed-length": lambda: workloads.mixed_length(300),
    "half-duplicated": lambda: workloads.half_duplicated(1000),
}


@pytest.fixture(scope="module")
def db(dsn):  # type: ignore[no-untyped-def]
    database = Database(dsn)
    yield database
    database.close()


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return warm_model()


@pytest.fixture(scope="module")
def loaded(db):  # type: ignore[no-untyped-def]
    cache: dict[str, tuple[list[str], str]] = {}

    def load(name: str) -> tuple[list[str], str]:
        if name not in cache:
            texts = WORKLOADS[name]()
            cache[name] = (texts, db.load(texts))
        return cache[name]

    return load


def record(benchmark, rows: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.extra_info["rows"] = rows
    benchmark.extra_info["rows_per_s"] = rows / benchmark.stats.stats.min


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_model_alone(benchmark, model, loaded, workload):
    benchmark.group = f"{workload}: embedlib vs the model alone"
    texts, _ = loaded(workload)
    benchmark.pedantic(lambda: model.encode(texts, batch_size=BATCH_SIZE), rounds=3)
    record(benchmark, len(texts))


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_embedlib(benchmark, db, model, loaded, workload):
    benchmark.group = f"{workload}: embedlib vs the model alone"
    texts, table = loaded(workload)
    benchmark.pedantic(
        lambda: ingest_once(db, table, batch_size=BATCH_SIZE),
        setup=lambda: db.drop(f"{table}_embeddings"),
        rounds=3,
    )
    record(benchmark, len(texts))


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_original_design(benchmark, db, model, loaded, workers):
    benchmark.group = "mixed-length: embedlib vs the original design"
    texts, table = loaded("mixed-length")
    benchmark.pedantic(lambda: original.ingest(db.dsn, table, model, BATCH_SIZE, workers), rounds=1)
    record(benchmark, len(texts))


def test_embedlib_against_the_original(benchmark, db, model, loaded):
    benchmark.group = "mixed-length: embedlib vs the original design"
    texts, table = loaded("mixed-length")
    benchmark.pedantic(lambda: ingest_once(db, table, batch_size=BATCH_SIZE), rounds=1)
    record(benchmark, len(texts))


@pytest.mark.parametrize(
    ("executor", "workers"), [("serial", 1), ("pipelined", 2), ("threaded", 2), ("process", 1), ("process", 2)]
)
def test_executor(benchmark, db, model, loaded, executor, workers):
    benchmark.group = "short: executors"
    texts, table = loaded("short")
    chosen = ProcessExecutor(workers) if executor == "process" else executor
    try:
        ingest_once(db, table, batch_size=BATCH_SIZE, executor=chosen, workers=workers)  # warm: start processes
        benchmark.pedantic(
            lambda: ingest_once(db, table, batch_size=BATCH_SIZE, executor=chosen, workers=workers), rounds=3
        )
    finally:
        if isinstance(chosen, ProcessExecutor):
            chosen.shutdown()
    record(benchmark, len(texts))


DB_ROWS = 100_000


@pytest.fixture(scope="module")
def db_table(db):  # type: ignore[no-untyped-def]
    texts = workloads.numbered(DB_ROWS)
    return texts, db.load(texts)


def test_database_path_embedlib(benchmark, db, db_table):
    benchmark.group = f"database path, {DB_ROWS:,} rows, HashEncoder(384)"
    _, table = db_table
    options = {"model": HashEncoder(384), "batch_size": DB_BATCH_SIZE, "window_size": WINDOW_SIZE}
    benchmark.pedantic(lambda: ingest_once(db, table, **options), rounds=3)
    record(benchmark, DB_ROWS)


def test_database_path_raw_copy(benchmark, db, db_table):
    benchmark.group = f"database path, {DB_ROWS:,} rows, HashEncoder(384)"
    texts, table = db_table
    encoder = HashEncoder(384)
    ingest_once(db, table, model=encoder, batch_size=DB_BATCH_SIZE)  # the target the raw table copies
    payloads = raw_payloads(texts, encoder)
    benchmark.pedantic(lambda: raw_copy(db, f"{table}_embeddings", payloads), rounds=3)
    record(benchmark, DB_ROWS)
