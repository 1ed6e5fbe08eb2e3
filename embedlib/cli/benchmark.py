"""Measured speedup per worker count: ``embedlib bench TABLE BATCH_SIZE MAX_WORKERS``.

The original design promised 1.7-1.9x at 2 workers, 3.0-3.5x at 4 and
5.0-6.0x at 8. Whether that holds depends on where a run waits, so a run is
measured in one of three regimes:

- ``compute``: the model on the local CPU (the default);
- ``db-latency``: PostgreSQL behind a proxy adding ``db_latency_ms`` to every
  round trip (a database in another availability zone), with a fast encoder
  (``testing.HashEncoder``) unless a model is named;
- ``remote-encoder``: an OpenAI-compatible embeddings service that takes
  ``encoder_latency_ms`` per request (``service.EmbeddingService``), the way
  TEI, Ollama or a hosted API do.

Each measured run embeds the table into a scratch target that is dropped
afterwards: the table's own target is never touched. A point's rate is the
report's ``rows_per_s`` (after setup: loading the model, checking tables),
so that small tables compare worker counts rather than start-up costs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql

from embedlib.db.relations import find_relation
from embedlib.db.session import connect, resolve_dsn
from embedlib.encode.base import Encoder, encodes_concurrently
from embedlib.options import DEFAULT_MODEL
from embedlib.run.executors import AUTO, Executor, ProcessExecutor, make_executor
from embedlib.run.ingestor import Ingestor
from embedlib.run.report import IngestReport
from embedlib.source.loader import load_lines, sample_lines
from embedlib.source.tables import inspect_source
from embedlib.store.schema import SIDE_TABLES
from embedlib.testing import HashEncoder

COMPUTE, DB_LATENCY, REMOTE_ENCODER = "compute", "db-latency", "remote-encoder"
REGIMES = (COMPUTE, DB_LATENCY, REMOTE_ENCODER)
DEFAULT_DB_LATENCY_MS = 5.0
DEFAULT_ENCODER_LATENCY_MS = 50.0
# What the original design expected at 2, 4 and 8 workers (low, high).
EXPECTED = {2: (1.7, 1.9), 4: (3.0, 3.5), 8: (5.0, 6.0)}


@dataclass(frozen=True)
class Regime:
    """Where a run waits: ``db_latency_ms`` per database round trip, ``encoder_latency_ms`` per request."""

    db_latency_ms: float = 0.0
    encoder_latency_ms: float = 0.0

    @property
    def name(self) -> str:
        if self.encoder_latency_ms:
            return REMOTE_ENCODER
        return DB_LATENCY if self.db_latency_ms else COMPUTE

    @classmethod
    def named(cls, name: str) -> Regime:
        return {
            COMPUTE: cls(),
            DB_LATENCY: cls(db_latency_ms=DEFAULT_DB_LATENCY_MS),
            REMOTE_ENCODER: cls(encoder_latency_ms=DEFAULT_ENCODER_LATENCY_MS),
        }[name]


@dataclass(frozen=True)
class Point:
    """One measured run."""

    regime: str
    executor: str
    workers: int
    batch_size: int
    rows: int
    rows_per_s: float
    seconds: float
    setup_s: float
    read_s: float
    encode_s: float
    write_s: float
    db_latency_ms: float = 0.0
    encoder_latency_ms: float = 0.0


def worker_counts(max_workers: int) -> list[int]:
    """1, 2, 4, ... up to ``max_workers``, which is always included."""
    counts = [1]
    while counts[-1] * 2 < max_workers:
        counts.append(counts[-1] * 2)
    return counts if max_workers == 1 else [*counts, max_workers]


@contextlib.contextmanager
def regime_setup(dsn: str, regime: Regime, model: str | Encoder | None) -> Iterator[tuple[str, str | Encoder]]:
    """The DSN and model a regime's runs use: through the latency proxy, or the local service."""
    from embedlib.testing import proxy, service

    with contextlib.ExitStack() as stack:
        if regime.db_latency_ms:
            dsn = stack.enter_context(proxy.in_subprocess(dsn, regime.db_latency_ms))
        if regime.encoder_latency_ms:
            model = stack.enter_context(service.in_subprocess(regime.encoder_latency_ms))
        elif model is None:
            model = HashEncoder(384) if regime.db_latency_ms else DEFAULT_MODEL  # 384: the real model's width
        yield dsn, model


@dataclass(frozen=True)
class Source:
    """The table a benchmark embeds."""

    table: str
    text_column: str = "text"
    id_column: str = "id"
    text_template: str | None = None


def measure(
    dsn: str,
    source: Source,
    *,
    regime: Regime,
    model: str | Encoder,
    executor: str | Executor,
    workers: int,
    batch_size: int,
    limit: int | None = None,
) -> Point:
    """One run over ``source`` into a scratch target, dropped afterwards (``dsn`` and ``model``
    as ``regime_setup`` gives them)."""
    target = f"embedlib_bench_{uuid.uuid4().hex[:8]}"
    try:
        report = Ingestor(
            dsn,
            table=source.table,
            text_column=source.text_column,
            text_template=source.text_template,
            id_column=source.id_column,
            target=target,
            model=model,
            executor=executor,
            workers=workers,
            batch_size=batch_size,
        ).run(limit=limit)
    finally:
        drop_scratch(dsn, source, target)
    return point_of(report, regime)


# Point fields copied from the run's IngestReport as they are.
_FROM_REPORT = ("executor", "workers", "batch_size", "rows", "rows_per_s", "seconds", "setup_s", "read_s",
                "encode_s", "write_s")  # fmt: skip


def point_of(report: IngestReport, regime: Regime) -> Point:
    return Point(
        regime=regime.name,
        db_latency_ms=regime.db_latency_ms,
        encoder_latency_ms=regime.encoder_latency_ms,
        **{name: getattr(report, name) for name in _FROM_REPORT},
    )


def drop_scratch(dsn: str, source: Source, target: str) -> None:
    """Drop a scratch target and the tables beside it (named after it: see store.schema.side_table_stem)."""
    conn = connect(dsn, autocommit=True)
    try:
        schema = inspect_source(conn, source.table, source.id_column, source.text_column, source.text_template).schema
        with conn.cursor() as cur:
            for name in (target, *(f"{target}_{kind}" for kind in SIDE_TABLES)):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))
    finally:
        conn.close()


def sweep(
    dsn: str | None,
    source: Source,
    *,
    regime: Regime,
    batch_sizes: Sequence[int],
    workers: Sequence[int],
    executors: Sequence[str] = (AUTO,),
    model: str | Encoder | None = None,
    limit: int | None = None,
    rounds: int = 1,
    on_point: Callable[[Point], None] = lambda point: None,
) -> list[Point]:
    """Every executor x worker count x batch size, in that nesting, in one regime; each point the
    best of ``rounds`` runs.

    A process pool is started once per worker count and warmed with a small
    run first, so its start-up (spawning, importing torch, loading the
    model) is not counted against its batches.
    """
    points = []
    with regime_setup(resolve_dsn(dsn), regime, model) as (run_dsn, run_model):
        for executor_name in executors:
            for count in workers:
                executor = make_executor(executor_name, count, concurrent_encoder=encodes_concurrently(run_model))
                run = functools.partial(
                    measure, run_dsn, source, regime=regime, model=run_model, executor=executor, workers=count
                )
                try:
                    if isinstance(executor, ProcessExecutor):
                        run(batch_size=batch_sizes[0], limit=batch_sizes[0] * count)
                    for batch_size in batch_sizes:
                        # The best of ``rounds`` runs: a shared machine's stalls only ever slow a run down.
                        tried = [run(batch_size=batch_size, limit=limit) for _ in range(rounds)]
                        point = max(tried, key=lambda p: p.rows_per_s)
                        points.append(point)
                        on_point(point)
                finally:
                    executor.shutdown()
    return points


def speedups(points: Sequence[Point]) -> dict[Point, float]:
    """Each point's rate over the rate of 1 worker with the same regime, executor and batch size."""
    base = {(p.regime, p.executor, p.batch_size): p.rows_per_s for p in points if p.workers == 1}
    return {
        p: p.rows_per_s / base[(p.regime, p.executor, p.batch_size)]
        for p in points
        if base.get((p.regime, p.executor, p.batch_size))
    }


def table_of(points: Sequence[Point]) -> str:
    """A markdown table: rate and speedup per point, beside what the original design expected."""
    ratios = speedups(points)
    lines = [
        "| regime | executor | batch | workers | rows | rows/s | speedup | expected | read s | encode s | write s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for p in points:
        low, high = EXPECTED.get(p.workers, (None, None))
        expected = f"{low}-{high}" if low else ""
        ratio = f"{ratios[p]:.2f}" if p in ratios else ""
        lines.append(
            f"| {p.regime} | {p.executor} | {p.batch_size} | {p.workers} | {p.rows:,} | {p.rows_per_s:,.0f} | "
            f"{ratio} | {expected} | {p.read_s:.2f} | {p.encode_s:.2f} | {p.write_s:.2f} |"
        )
    return "\n".join(lines)


def save(path: str | Path, points: Sequence[Point], machine: dict[str, Any]) -> None:
    """Points and machine info as JSON (what the notebooks read), merged into what ``path`` holds."""
    path = Path(path)
    kept = []
    if path.exists():
        measured = {(p.regime, p.executor, p.batch_size, p.workers) for p in points}
        kept = [p for p in load(path) if (p.regime, p.executor, p.batch_size, p.workers) not in measured]
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "points": [dataclasses.asdict(p) for p in [*kept, *points]]}
    path.write_text(json.dumps(document, indent=1) + "\n")


def load(path: str | Path) -> list[Point]:
    return [Point(**item) for item in json.loads(Path(path).read_text())["points"]]


def ensure_sample_table(dsn: str | None, table: str) -> int:
    """Create ``table`` from the bundled sample sentences if it does not exist; rows loaded (0 if it did).

    Only a plain name is created (in the default schema): a missing
    ``schema.table`` is left for the run to report, as a typo would be.
    """
    conn = connect(resolve_dsn(dsn))
    try:
        if "." in table or find_relation(conn, table) is not None:
            return 0
        return load_lines(conn, table, sample_lines())
    finally:
        conn.close()


def speedup_lines(points: Sequence[Point]) -> list[str]:
    """What ``embedlib bench`` prints: per worker count, rows/s and speedup beside the expected band."""
    ratios = speedups(points)
    lines = [f"{'workers':>7}  {'rows/s':>9}  {'speedup':>7}  original design expected"]
    for p in points:
        low, high = EXPECTED.get(p.workers, (None, None))
        expected = f"{low:.1f}-{high:.1f}x" if low else ""
        lines.append(f"{p.workers:>7}  {p.rows_per_s:>9,.1f}  {ratios.get(p, 0):>6.2f}x  {expected}")
    return lines
