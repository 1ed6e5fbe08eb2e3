"""What the scaling benchmarks stand on: the latency proxy, autoscaling, and ``embedlib bench``."""

from __future__ import annotations

import json
import time

from embedlib import Ingestor
from embedlib.cli.benchmark import worker_counts
from embedlib.db.session import connect
from embedlib.run.autoscale import Autoscaler
from embedlib.testing.proxy import Proxy
from embedlib.testing.service import EmbeddingService
from tests.processes import assert_clean_failure, run_cli


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_periods(scaler: Autoscaler, clock: FakeClock, rate_at: dict[int, float], periods: int) -> None:
    """Feed the scaler ``periods`` measuring periods in which ``limit`` workers make ``rate_at[limit]`` rows/s."""
    for _ in range(periods):
        level = scaler.limit
        batches = 2 * level
        for _ in range(batches):
            clock.now += 1.0 / batches
            scaler.record(int(rate_at[level] / batches))


def test_autoscaler_climbs_while_it_pays_then_holds_the_best():
    clock = FakeClock()
    scaler = Autoscaler(16, clock=clock, period_s=0.999)  # each fed period closes at its last batch
    # A service that scales to 8 concurrent requests, then saturates (and degrades a little).
    rates = {1: 100, 2: 200, 3: 290, 4: 400, 5: 480, 7: 700, 8: 800, 9: 790, 16: 780}
    run_periods(scaler, clock, rates, 5)
    assert scaler.steps == [1, 2, 4, 8, 16, 8]
    assert scaler.chosen == 8
    run_periods(scaler, clock, rates, 20)  # probes up (9: no gain), then down (7: worse), keeps 8
    assert scaler.chosen == 8 and 9 in scaler.steps and 7 in scaler.steps


def test_autoscaler_stays_at_one_when_more_workers_do_not_pay():
    clock = FakeClock()
    scaler = Autoscaler(8, clock=clock, period_s=0.999)
    run_periods(scaler, clock, {1: 100, 2: 104}, 6)  # the model on a CPU: a second worker gains 4%
    assert scaler.steps[:3] == [1, 2, 1] and scaler.chosen == 1


def test_autoscale_ingest_against_a_slow_service_chooses_many_workers(dsn, tables):
    table = tables.source([f"autoscaled text {i}" for i in range(1500)])
    with EmbeddingService(latency_ms=20) as service:
        report = Ingestor(dsn, table=table, model=service.url, batch_size=10, workers=8, autoscale=True).run()
    assert report.rows == 1500 and report.executor == "threaded"
    assert report.autoscale_steps[0] == 1 and max(report.autoscale_steps) >= 4
    assert report.workers >= 4  # waiting on a service: more requests in flight pay
    assert len(tables.embeddings(table)) == 1500


def test_proxy_adds_its_latency_to_every_round_trip_and_keeps_the_bytes(dsn):
    with_latency = Proxy(dsn, latency_ms=20)
    try:
        conn = connect(with_latency.dsn, autocommit=True)
        with conn.cursor() as cur:
            started = time.perf_counter()
            for _ in range(5):
                cur.execute("SELECT repeat('x', 300000) || %s", ("end",))
                assert cur.fetchone()[0] == "x" * 300000 + "end"  # large replies arrive whole and in order
            per_query = (time.perf_counter() - started) / 5
        conn.close()
    finally:
        with_latency.stop()
    assert per_query >= 0.020  # a lower bound: the proxy cannot deliver before its latency


def test_worker_counts_double_up_to_the_maximum():
    assert worker_counts(1) == [1]
    assert worker_counts(8) == [1, 2, 4, 8]
    assert worker_counts(6) == [1, 2, 4, 6]


def test_bench_measures_each_worker_count_in_scratch_tables(dsn, conn, tables):
    table = tables.source([f"bench sentence {i}" for i in range(400)])
    Ingestor(dsn, table=table, model=_hash_model(), batch_size=50).run()  # the table's own target, kept as it is
    before = _tables(conn)
    result = run_cli("bench", table, "25", "4", "--encoder-latency-ms", "5", "--json", "--rounds", "1", dsn=dsn)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    points = figures["points"]
    assert [p["workers"] for p in points] == [1, 2, 4]
    assert all(p["rows"] == 400 and p["regime"] == "remote-encoder" for p in points)
    assert points[0]["speedup"] == 1.0 and points[-1]["speedup"] > 1.0  # waiting on a service: workers pay
    assert figures["machine"]["cpus"] >= 1 and "postgresql" in figures["machine"]
    assert _tables(conn) == before  # scratch targets dropped; the table's own target untouched
    assert len(tables.embeddings(table)) == 400


def test_bench_creates_a_missing_table_from_the_sample_and_refuses_bad_input(dsn, conn, tables):
    table = tables.name("bench")
    result = run_cli("bench", table, "100", "1", "--db-latency-ms", "1", "--limit", "200", "--rounds", "1", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert f"table '{table}' did not exist: loaded 2000 bundled sample sentences" in result.stdout
    assert "regime db-latency" in result.stdout and "      1" in result.stdout
    assert_clean_failure(run_cli("bench", table, "0", "2", dsn=dsn), "expected a whole number >= 1")
    assert_clean_failure(run_cli("bench", f"nosuch.{table}", "10", "2", dsn=dsn), "does not exist")
    result = run_cli(
        "bench", table, "100", "1", "--limit", "100", "--rounds", "1", "--save", "/proc/nowhere.json", dsn=dsn
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "embedlib: error: cannot save to '/proc/nowhere.json'"
    )
    assert_clean_failure(run_cli("bench", table, "10", "2", "--model", "no-such-model", dsn=dsn), "cannot load model")
    assert_clean_failure(run_cli("bench", table, "10", "2", "--db-latency-ms", "-3", dsn=dsn), "milliseconds >= 0")


def _hash_model():  # type: ignore[no-untyped-def]
    from embedlib.testing import HashEncoder

    return HashEncoder(384)


def _tables(conn) -> set[str]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
        return {name for (name,) in cur.fetchall()}
