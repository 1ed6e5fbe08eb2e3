"""A table that changes, as a pytest-benchmark group: a run after 1,000 changes on a table of
100,000 embedded rows, untracked (a scan of the whole source) beside tracked (a read of the change
queue). ``python -m benchmarks.sync`` measures more sizes and a follower's lag.

    pytest benchmarks/test_sync.py --benchmark-only
"""

from __future__ import annotations

import itertools

import pytest

from benchmarks.measure import Database
from benchmarks.sync import OPTIONS, change, make_table
from embedlib import Ingestor

ROWS = 100_000
CHANGES = 1000


@pytest.fixture(scope="module")
def db(dsn):  # type: ignore[no-untyped-def]
    database = Database(dsn)
    yield database
    database.close()


@pytest.mark.benchmark(group="a run after 1,000 changes, 100,000 rows")
@pytest.mark.parametrize("tracked", [False, True], ids=["untracked", "tracked"])
def test_a_run_after_changes(benchmark, db, tracked):  # type: ignore[no-untyped-def]
    table = make_table(db, ROWS)
    ingestor = Ingestor(db.dsn, table=table, **OPTIONS)
    if tracked:
        ingestor.track()
        ingestor.run()  # the full pass that tracking asks for first
    seeds = itertools.count()

    def setup() -> None:
        change(db, table, ROWS, CHANGES, seed=next(seeds))

    benchmark.pedantic(lambda: Ingestor(db.dsn, table=table, **OPTIONS).run(), setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["rows"] = ROWS
