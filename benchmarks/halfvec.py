"""vector against halfvec storage, side by side: ``python -m benchmarks.halfvec [ROWS] [--rounds N]``.

Prints a markdown table: load rate, table size, HNSW build time and index
size of ROWS (default 100,000) rows of 384 dimensions stored with
``dtype="float"`` and ``dtype="half"``. The vectors come from the fast
HashEncoder, so the load measures the database path, and the sizes and
build times are those of the real model's width; recall needs the real
model's vectors, and is measured in ``tests/query/test_search.py``
(``pytest -s -k halfvec``).
"""

from __future__ import annotations

import argparse

from psycopg2 import sql

from benchmarks import workloads
from benchmarks.measure import Database, Result, ingest_once, side_by_side
from embedlib import Ingestor
from embedlib.cli import positive_int
from embedlib.db.session import fetch_all
from embedlib.testing import HashEncoder

BATCH_SIZE = 1000
DTYPES = ("float", "half")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=positive_int, nargs="?", default=100_000)
    parser.add_argument("--rounds", type=positive_int, default=2)
    args = parser.parse_args()
    encoder = HashEncoder(384)
    db = Database()
    try:
        tables = {dtype: db.load(workloads.numbered(args.rows)) for dtype in DTYPES}
        options = {"model": encoder, "batch_size": BATCH_SIZE}
        loads = side_by_side(
            {dtype: lambda dtype=dtype: ingest_once(db, tables[dtype], dtype=dtype, **options) for dtype in DTYPES},
            args.rows,
            args.rounds,
        )
        print(table_of(args.rows, loads, {dtype: measure_index(db, tables[dtype], options) for dtype in DTYPES}))
    finally:
        db.close()


def measure_index(db: Database, table: str, options: dict[str, object]) -> tuple[int, float, int]:
    """The target's size, and the HNSW index's build seconds and size (bytes, seconds, bytes)."""
    target = f"{table}_embeddings"
    report = Ingestor(db.dsn, table=table, **options).build_index("hnsw", "cosine")
    table_bytes, index_bytes = fetch_all(
        db.conn,
        "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass)",
        (sql.Identifier(target).as_string(db.conn), sql.Identifier(report.name).as_string(db.conn)),
    )[0]
    return int(table_bytes), report.seconds, int(index_bytes)


def table_of(rows: int, loads: list[Result], sizes: dict[str, tuple[int, float, int]]) -> str:
    lines = [
        f"\n{rows:,} rows of 384 dimensions, vector (float) against halfvec (half)\n",
        "| dtype | load rows/s | table MB | HNSW build s | HNSW index MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for load in loads:
        table_bytes, build_s, index_bytes = sizes[load.name]
        lines.append(
            f"| {load.name} | {load.rows_per_s:,.0f} | {table_bytes / 2**20:,.0f} | {build_s:.1f} | "
            f"{index_bytes / 2**20:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
