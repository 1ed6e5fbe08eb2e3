"""What every benchmark does: load texts into a table, time contenders on it side by side.

Contenders of one comparison run in the same process, in turns, round after
round (machines here are shared and absolute times drift); each one's best
round counts. The model is loaded and warmed once, before any timing.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg2 import sql

from embedlib import Ingestor, IngestReport
from embedlib.cli.app import SWITCH_INTERVAL_S
from embedlib.db import copybin
from embedlib.db.server import ensure_vector_extension
from embedlib.db.session import connect, resolve_dsn
from embedlib.encode.base import resolve_encoder
from embedlib.store.schema import SIDE_TABLES

# Measured as ``embedlib ingest`` runs: the command sets the interpreter's switch interval (see cli.app).
sys.setswitchinterval(SWITCH_INTERVAL_S)


@dataclass
class Result:
    name: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    reports: list[IngestReport] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.best


class Database:
    """Tables for one benchmark run on the embedded server (or ``EMBEDLIB_DSN``); dropped on close."""

    def __init__(self, dsn: str | None = None) -> None:
        self.dsn = resolve_dsn(dsn)
        self.conn = connect(self.dsn, autocommit=True)
        ensure_vector_extension(self.conn)
        self._tables: list[str] = []

    def load(self, texts: Sequence[str]) -> str:
        """A new table ``(id bigint primary key, text)`` holding ``texts`` as ids 1..n."""
        name = f"bench_{uuid.uuid4().hex[:8]}"
        self._tables.append(name)
        ident = sql.Identifier(name)
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, text text)").format(ident))
            data = copybin.payload([np.arange(1, len(texts) + 1, dtype=">i8"), copybin.text(list(texts))])
            cur.copy_expert(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(ident), io.BytesIO(data))
            cur.execute(sql.SQL("ANALYZE {}").format(ident))
        return name

    def adopt(self, table: str) -> None:
        """Drop ``table`` (made elsewhere) and its targets on close, like one made here."""
        self._tables.append(table)

    def drop(self, *tables: str) -> None:
        with self.conn.cursor() as cur:
            for table in tables:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def close(self) -> None:
        beside = ("embeddings", "original", *(f"embedding_{kind}" for kind in (*SIDE_TABLES, "queue")))
        self.drop(*(f"{t}_{kind}" for t in self._tables for kind in beside))
        self.drop(*self._tables)
        with self.conn.cursor() as cur:  # change capture's function, where a table was tracked
            for table in self._tables:
                cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(f"{table}_embedding_track")))
        self.conn.close()


def warm_model(name: str = "all-MiniLM-L6-v2") -> Any:
    """The sentence-transformers model embedlib uses (one per process), warmed up."""
    encoder = resolve_encoder(name)
    encoder.encode(["warm up the model"])
    return encoder._model


def ingest_once(db: Database, table: str, **options: Any) -> tuple[float, IngestReport]:
    """One full run of embedlib over ``table`` from an empty target; its wall time and report."""
    db.drop(f"{table}_embeddings")
    ingestor = Ingestor(db.dsn, table=table, **options)
    started = time.perf_counter()
    report = ingestor.run()
    return time.perf_counter() - started, report


Timed = tuple[float, IngestReport | None]  # seconds, and the report if embedlib ran


def timed(run: Callable[[], object]) -> Timed:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started, None


def side_by_side(contenders: dict[str, Callable[[], Timed]], rows: int, rounds: int) -> list[Result]:
    """Run each contender once per round, in turns."""
    results = {name: Result(name, rows) for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            seconds, report = run()
            results[name].seconds.append(seconds)
            if report is not None:
                results[name].reports.append(report)
    return list(results.values())


def table_of(title: str, results: list[Result], baseline: str) -> str:
    """A markdown table: each contender's best time, rate, and ratio of rates to ``baseline``."""
    base = next(r for r in results if r.name == baseline)
    lines = [
        f"\n{title}\n",
        "| | rows | best s | rows/s | x " + baseline + " | texts encoded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        encoded = str(r.reports[-1].encoded) if r.reports else ""
        lines.append(
            f"| {r.name} | {r.rows:,} | {r.best:.2f} | {r.rows_per_s:,.0f} | "
            f"{r.rows_per_s / base.rows_per_s:.2f} | {encoded} |"
        )
    return "\n".join(lines)
