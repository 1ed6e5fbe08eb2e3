"""A pgvector index on a target's vectors, built after the load: ``embedlib index TABLE``.

Built after a bulk load, never before: every row inserted into an HNSW
index is a graph search, which slows a load by orders of magnitude, while
one build over the loaded rows is minutes for millions. ``Ingestor(...,
index="hnsw")`` builds it at the end of a run.

- ``hnsw`` (the default): the better speed/recall trade-off, no training.
- ``ivfflat``: faster to build and smaller; its lists are trained on the
  rows present, so build it on a loaded table (lists = rows / 1000, at
  least 10, as pgvector advises up to a million rows; sqrt(rows) beyond).

The metric decides the operator class, and must match the operator a
search orders by (``search.OPERATORS``) for the index to be used. The build
runs with ``maintenance_work_mem`` raised (the graph of a large table then
fits in memory, several times faster) and reports progress from
``pg_stat_progress_create_index``, read on a second connection.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2 import sql

from embedlib.db.relations import MAX_IDENTIFIER_BYTES, TargetTable
from embedlib.db.session import Connection, connect, fetch_all
from embedlib.options import OPTIONS

BUILD_MEMORY = "512MB"
_POLL_S = 0.5


@dataclass(frozen=True)
class IndexReport:
    name: str
    method: str
    metric: str
    rows: int
    seconds: float
    created: bool  # False: an index of this method and metric was there already


def index_name(target: TargetTable, method: str, metric: str) -> str:
    """``<target>_<method>_<metric>``, shortened with a hash if longer than PostgreSQL allows."""
    name = f"{target.name}_{method}_{metric}"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.md5(name.encode("utf-8")).hexdigest()[:8]
    return f"embedlib_{method}_{metric}_{digest}"


def operator_class(target: TargetTable, metric: str) -> str:
    """pgvector's operator class for the target's vector type and ``metric``, e.g. ``halfvec_cosine_ops``."""
    return f"{target.vector_type}_{metric}_ops"  # both from fixed lists: VECTOR_TYPES and options.METRICS


def check_metric(metric: str) -> None:
    """Refuse a metric pgvector has no operator for (index builds and searches alike)."""
    OPTIONS["metric"].rule.check("metric", metric)


def build_index(
    dsn: str,
    target: TargetTable,
    *,
    method: str = "hnsw",
    metric: str = "cosine",
    on_progress: Callable[[str, int, int], None] = lambda phase, done, total: None,
) -> IndexReport:
    """Build the index on ``target.embedding`` (if not there) and report it.

    ``on_progress(phase, done, total)`` is called every half second while it builds.
    """
    OPTIONS["index"].rule.check("index", method)
    check_metric(metric)
    name = index_name(target, method, metric)
    conn = connect(dsn, autocommit=True)
    try:
        rows = int(fetch_all(conn, sql.SQL("SELECT count(*) FROM {}").format(target.ident))[0][0])
        if _exists(conn, target, name):
            return IndexReport(name, method, metric, rows, 0.0, created=False)
        with_options: sql.Composable = sql.SQL("")
        if method == "ivfflat":
            lists = max(10, rows // 1000) if rows <= 1_000_000 else int(math.sqrt(rows))
            with_options = sql.SQL(" WITH (lists = {})").format(sql.Literal(lists))
        statement = sql.SQL("CREATE INDEX {name} ON {target} USING {method} (embedding {opclass}){options}").format(
            name=sql.Identifier(name),
            target=target.ident,
            method=sql.SQL(method),  # one of options.INDEX_METHODS
            opclass=sql.SQL(operator_class(target, metric)),
            options=with_options,
        )
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = %s", (BUILD_MEMORY,))
        _run_watched(conn, statement, dsn, on_progress)
        with conn.cursor() as cur:  # fresh statistics, so the planner knows the loaded table and picks the index
            cur.execute(sql.SQL("ANALYZE {}").format(target.ident))
        return IndexReport(name, method, metric, rows, time.perf_counter() - started, created=True)
    finally:
        conn.close()


def _exists(conn: Connection, target: TargetTable, name: str) -> bool:
    query = "SELECT EXISTS (SELECT FROM pg_indexes WHERE schemaname = %s AND tablename = %s AND indexname = %s)"
    return bool(fetch_all(conn, query, (target.schema, target.name, name))[0][0])


def _run_watched(
    conn: Connection, statement: sql.Composable, dsn: str, on_progress: Callable[[str, int, int], None]
) -> None:
    """Run ``statement`` on ``conn`` in a thread; report the build's progress from another connection."""
    pid = conn.get_backend_pid()
    failure: list[BaseException] = []

    def build() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    builder = threading.Thread(target=build, name="embedlib-index-build", daemon=True)
    builder.start()
    watcher = connect(dsn, autocommit=True)
    try:
        while builder.is_alive():
            builder.join(_POLL_S)
            rows = fetch_all(
                watcher,
                "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total "
                "FROM pg_stat_progress_create_index WHERE pid = %s",
                (pid,),
            )
            if rows:
                phase, tuples_done, tuples_total, blocks_done, blocks_total = rows[0]
                done, total = (tuples_done, tuples_total) if tuples_total else (blocks_done, blocks_total)
                on_progress(phase, int(done or 0), int(total or 0))
    except BaseException:  # Ctrl-C: the server stops the build, nothing is left half made
        conn.cancel()
        builder.join()
        raise
    finally:
        watcher.close()
    if failure:
        raise failure[0]
