"""Speedup per worker count in three regimes, as pytest-benchmark tests.

    pytest benchmarks/test_scaling.py --benchmark-only              (small sizes, ~10 minutes here)
    pytest benchmarks/test_scaling.py --benchmark-only --full-size  (10x the rows)

Workers 1, 2, 4, 8 x batch sizes 32, 100, 256 x executors, in each regime of
``embedlib.cli.benchmark``: the real model on the CPU (``compute``), PostgreSQL
behind a 5 ms proxy with a fast encoder (``db-latency``), and a local
OpenAI-compatible service taking 50 ms a request (``remote-encoder``).
Every point is also saved, with machine info, to
``benchmarks/results/scaling.json`` (or ``$EMBEDLIB_SCALING_JSON``), merged
with the points already there: ``notebooks/speedup.ipynb`` plots that file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import workloads
from benchmarks.measure import Database
from embedlib.cli import benchmark as bench
from embedlib.cli.machine import machine_info
from embedlib.encode.base import encodes_concurrently
from embedlib.run.executors import Executor, make_executor

RESULTS = Path(os.environ.get("EMBEDLIB_SCALING_JSON", Path(__file__).parent / "results" / "scaling.json"))
WORKERS = [1, 2, 4, 8]
BATCH_SIZES = [32, 100, 256]
# Rows per run (small, full): enough that a run at 8 workers is not all start and end.
ROWS = {bench.COMPUTE: (512, 4000), bench.DB_LATENCY: (20_000, 200_000), bench.REMOTE_ENCODER: (4_000, 40_000)}
# The process executor's gain is spare cores, which only the compute regime can use;
# elsewhere it would add 8 model-less process start-ups and measure the same waiting as threads.
EXECUTORS = {
    bench.COMPUTE: ["pipelined", "threaded", "process"],
    bench.DB_LATENCY: ["pipelined", "threaded"],
    bench.REMOTE_ENCODER: ["pipelined", "threaded"],
}
CASES = [
    (regime, executor, batch_size, workers)
    for regime in bench.REGIMES
    for executor in EXECUTORS[regime]
    for workers in WORKERS
    for batch_size in BATCH_SIZES
]


class RegimeRig:
    """One regime's table, DSN and model (proxy or service running), and the executor last used."""

    def __init__(self, dsn: str, regime: bench.Regime, rows: int) -> None:
        self.regime = regime
        self.rows = rows
        self.db = Database(dsn)
        self.table = self.db.load(workloads.numbered(rows))
        self._setup = contextlib.ExitStack()
        self.dsn, self.model = self._setup.enter_context(bench.regime_setup(dsn, regime, None))
        self._executor: tuple[tuple[str, int], Executor] | None = None

    def executor(self, name: str, workers: int) -> Executor:
        """The executor for a point; a process pool is kept while the worker count stays the same."""
        if self._executor is None or self._executor[0] != (name, workers):
            self.close_executor()
            executor = make_executor(name, workers, concurrent_encoder=encodes_concurrently(self.model))
            self._executor = ((name, workers), executor)
            if name == "process":  # start and warm the processes outside the timing
                self.run(executor, workers, BATCH_SIZES[0], limit=BATCH_SIZES[0] * workers)
        return self._executor[1]

    def run(self, executor: Executor, workers: int, batch_size: int, limit: int | None = None) -> bench.Point:
        return bench.measure(
            self.dsn,
            bench.Source(self.table),
            regime=self.regime,
            model=self.model,  # type: ignore[arg-type]
            executor=executor,
            workers=workers,
            batch_size=batch_size,
            limit=limit,
        )

    def close_executor(self) -> None:
        if self._executor is not None:
            self._executor[1].shutdown()
            self._executor = None

    def close(self) -> None:
        self.close_executor()
        self._setup.close()  # stops the proxy or the service
        self.db.close()


@pytest.fixture(scope="module")
def rigs(dsn: str, request: pytest.FixtureRequest) -> Iterator[dict[str, RegimeRig]]:
    full = request.config.getoption("full_size")
    made: dict[str, RegimeRig] = {}

    def rig(name: str) -> RegimeRig:
        if name not in made:
            for other in made.values():
                other.close_executor()
            made[name] = RegimeRig(dsn, bench.Regime.named(name), ROWS[name][1 if full else 0])
        return made[name]

    yield rig  # type: ignore[misc]
    for made_rig in made.values():
        made_rig.close()


@pytest.fixture(scope="module")
def points() -> Iterator[list[bench.Point]]:
    measured: list[bench.Point] = []
    yield measured
    if measured:
        bench.save(RESULTS, measured, machine_info())
        print(f"\n{bench.table_of(measured)}\n\nsaved to {RESULTS}")


@pytest.mark.parametrize(("regime", "executor", "batch_size", "workers"), CASES)
def test_speedup(benchmark, rigs, points, regime, executor, batch_size, workers):  # type: ignore[no-untyped-def]
    rig = rigs(regime)
    chosen = rig.executor(executor, workers)
    benchmark.group = f"{regime}: {executor}, batch size {batch_size}"
    point = benchmark.pedantic(lambda: rig.run(chosen, workers, batch_size), rounds=1, iterations=1)
    assert point.rows == rig.rows  # every row embedded, at every point
    points.append(point)
    benchmark.extra_info.update(rows=point.rows, rows_per_s=round(point.rows_per_s, 1), workers=workers)
