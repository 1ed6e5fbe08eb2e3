"""The database path alone at one size, in a process of its own: ``python -m benchmarks.dbpath ROWS``.

Prints one JSON line: embedlib's rate with the fast HashEncoder (384
dimensions, so rows as wide as the real model's), the rate of a raw binary
COPY of the same rows into a table shaped like the target (same columns,
same indexes, the same batches, each committed), and embedlib's peak RSS.
The raw COPY's rows are built outside its timing: it is the database's own
ceiling for these rows. ``benchmarks.compare dbpath`` runs it per size.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import time

import numpy as np
from psycopg2 import sql

from benchmarks import workloads
from benchmarks.measure import Database, ingest_once
from embedlib import copybin
from embedlib.testing import HashEncoder

BATCH_SIZE = 1000
WINDOW_SIZE = 10_000


def raw_copy_seconds(db: Database, target: str, texts: list[str], encoder: HashEncoder) -> float:
    raw = f"{target}_raw"
    db.drop(raw)
    with db.conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(sql.Identifier(raw), sql.Identifier(target))
        )
    conn = db.conn
    conn.autocommit = False
    copy = sql.SQL(
        "COPY {} (embedding, norm, frequency, text_hash, char_length, token_count, truncated, model, id) "
        "FROM STDIN (FORMAT binary)"
    ).format(sql.Identifier(raw))
    seconds = 0.0
    try:
        for start in range(0, len(texts), BATCH_SIZE):
            chunk = texts[start : start + BATCH_SIZE]
            vectors = encoder.encode(chunk)
            data = copybin.payload(
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
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.copy_expert(copy, io.BytesIO(data), size=len(data))
            conn.commit()
            seconds += time.perf_counter() - started
    finally:
        conn.autocommit = True
        db.drop(raw)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--executor", default="auto")
    args = parser.parse_args()
    texts = workloads.numbered(args.rows)
    encoder = HashEncoder(384)
    db = Database()
    try:
        table = db.load(texts)
        del texts
        embedlib_s, raw_s, peak_mb = [], [], 0.0
        for _ in range(args.rounds):
            seconds, report = ingest_once(
                db, table, model=encoder, batch_size=BATCH_SIZE, window_size=WINDOW_SIZE, executor=args.executor
            )
            assert report.rows == args.rows
            embedlib_s.append(seconds)
            peak_mb = max(peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        texts = workloads.numbered(args.rows)  # again: the raw COPY needs the texts embedlib read itself
        for _ in range(args.rounds):
            raw_s.append(raw_copy_seconds(db, f"{table}_embeddings", texts, encoder))
    finally:
        db.close()
    print(
        json.dumps(
            {
                "rows": args.rows,
                "executor": report.executor,
                "embedlib_rows_per_s": args.rows / min(embedlib_s),
                "raw_rows_per_s": args.rows / min(raw_s),
                "peak_rss_mb": peak_mb,
            }
        )
    )


if __name__ == "__main__":
    main()
