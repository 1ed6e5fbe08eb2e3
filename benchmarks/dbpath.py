"""The database path alone at one size, in a process of its own: ``python -m benchmarks.dbpath ROWS``.

Prints one JSON line: embedlib's rate with the fast HashEncoder (384
dimensions, so rows as wide as the real model's), the rate of a raw binary
COPY of the same rows into a table shaped like the target (same columns,
same indexes, the same batches, each committed), and embedlib's peak RSS.
The raw COPY's payloads are built before its timing starts: it is the
database's own ceiling for these rows. ``benchmarks.compare dbpath`` runs it per size.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from psycopg2 import sql

from benchmarks import workloads
from benchmarks.measure import Database, ingest_once
from embedlib.cli import positive_int
from embedlib.db import copybin
from embedlib.run.executors import AUTO, EXECUTORS
from embedlib.testing import HashEncoder

BATCH_SIZE = 1000
WINDOW_SIZE = 10_000


def raw_payloads(texts: list[str], encoder: HashEncoder) -> list[bytes]:
    """The rows embedlib writes for ``texts`` (ids 1..n), as binary COPY payloads of BATCH_SIZE rows."""
    payloads = []
    for start in range(0, len(texts), BATCH_SIZE):
        chunk = texts[start : start + BATCH_SIZE]
        vectors = encoder.encode(chunk)
        payloads.append(
            copybin.payload(
                [
                    copybin.vector(vectors),
                    copybin.float4(np.linalg.norm(vectors, axis=1)),
                    copybin.int4(np.ones(len(chunk))),
                    copybin.fixed_text([hashlib.md5(t.encode()).hexdigest() for t in chunk], 32),
                    copybin.int4(np.array([len(t) for t in chunk])),
                    copybin.int4(np.array(encoder.count_tokens(chunk))),
                    copybin.boolean(np.zeros(len(chunk))),
                    copybin.constant_text(encoder.name, len(chunk)),
                    np.arange(start + 1, start + len(chunk) + 1, dtype=">i8"),
                ]
            )
        )
    return payloads


def raw_copy(db: Database, target: str, payloads: list[bytes]) -> None:
    """COPY the payloads into a new table shaped like ``target`` (columns and indexes), one commit each."""
    raw = f"{target}_raw"
    db.drop(raw)
    with db.conn.cursor() as cur:
        like = sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)")
        cur.execute(like.format(sql.Identifier(raw), sql.Identifier(target)))
    copy = sql.SQL(
        "COPY {} (embedding, norm, frequency, text_hash, char_length, token_count, truncated, model, id) "
        "FROM STDIN (FORMAT binary)"
    ).format(sql.Identifier(raw))
    conn = db.conn
    conn.autocommit = False
    try:
        for data in payloads:
            with conn.cursor() as cur:
                cur.copy_expert(copy, io.BytesIO(data), size=len(data))
            conn.commit()
    finally:
        conn.autocommit = True


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM on Linux (ru_maxrss can carry a parent's figure across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=positive_int)
    parser.add_argument("--rounds", type=positive_int, default=1)
    parser.add_argument("--executor", choices=[AUTO, *EXECUTORS], default=AUTO)
    parser.add_argument("--workers", type=positive_int)
    parser.add_argument("--load-only", action="store_true", help="create the source table, print its name")
    args = parser.parse_args()
    if args.load_only:
        print(Database().load(workloads.numbered(args.rows)))  # kept: the calling process drops it
        return
    # The source is loaded by another process, so this one's peak memory is embedlib's alone.
    loader = [sys.executable, "-m", "benchmarks.dbpath", str(args.rows), "--load-only"]
    table = subprocess.run(loader, check=True, capture_output=True, text=True).stdout.split()[-1]
    encoder = HashEncoder(384)
    db = Database()
    db.adopt(table)
    try:
        embedlib_s, raw_s = [], []
        for _ in range(args.rounds):
            seconds, report = ingest_once(
                db,
                table,
                model=encoder,
                batch_size=BATCH_SIZE,
                window_size=WINDOW_SIZE,
                executor=args.executor,
                workers=args.workers,
            )
            assert report.rows == args.rows
            embedlib_s.append(seconds)
        peak_mb = peak_rss_mb()
        payloads = raw_payloads(workloads.numbered(args.rows), encoder)  # built untimed
        target = f"{table}_embeddings"
        for _ in range(args.rounds):
            started = time.perf_counter()
            raw_copy(db, target, payloads)
            raw_s.append(time.perf_counter() - started)
            db.drop(f"{target}_raw")
    finally:
        db.close()
    figures = {
        "rows": args.rows,
        "executor": f"{report.executor} x{report.workers}",
        "embedlib_rows_per_s": args.rows / min(embedlib_s),
        "raw_rows_per_s": args.rows / min(raw_s),
        "peak_rss_mb": peak_mb,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
