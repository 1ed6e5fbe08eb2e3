"""A table that changes: ``python -m benchmarks.sync [ROWS ...] [--changes N] [--lag-changes N] [--model M]``.

For each size, a table of ROWS numbered texts whose target holds a vector
for every row (the first load is not what is measured: the target is filled
by SQL from one embedded row, which takes a minute where embedding 10
million rows would take an hour); then, each after N changes (default
1,000: a third updates of texts, a third deletes, a third inserts, spread
over the table):

- a run on the table untracked, which reads the whole source span by span;
- a run on the table tracked (``embedlib track``), which reads the change queue.

Then the lag of a follower (``ingest --follow`` on a tracked table): from
the commit of a change to its vector's write (``embedded_at``, the start of
the writing transaction), for a steady stream of single-row updates, p50
and p99, with the stand-in encoder and with ``--model`` (the real model by
default; ``--model none`` leaves it out).
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from typing import Any

from psycopg2 import sql

from benchmarks.measure import Database
from embedlib import Ingestor
from embedlib.cli import positive_int
from embedlib.testing import HashEncoder

OPTIONS: dict[str, Any] = {"model": HashEncoder(384), "batch_size": 1000}


def make_table(db: Database, rows: int, model: Any = None) -> str:
    """A table of ``rows`` numbered texts, and a target holding a vector of ``model`` for each."""
    table = db.load([])
    name = sql.Identifier(table)
    with db.conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, 'row number ' || g || ' of a table that changes' "
                "FROM generate_series(1, %s) g"
            ).format(name),
            (rows,),
        )
    # The target, its tables and model, and row 1's vector, which every other row gets a copy of.
    Ingestor(db.dsn, table=table, **{**OPTIONS, "model": model or OPTIONS["model"]}).run(limit=1)
    target = sql.Identifier(f"{table}_embeddings")
    with db.conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {target} SELECT s.id, x.embedding, x.model, md5(s.text), char_length(s.text), "
                "x.token_count, x.truncated, x.norm, 1, now() FROM {source} s, "
                "(SELECT * FROM {target} WHERE id = 1) x WHERE s.id > 1"
            ).format(target=target, source=name)
        )
        cur.execute(sql.SQL("VACUUM ANALYZE {}").format(target))
        cur.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
    return table


def change(db: Database, table: str, rows: int, changes: int, seed: int) -> None:
    """``changes`` changes spread over ``table``: updates, deletes and inserts in equal parts."""
    ids = random.Random(seed).sample(range(2, rows + 1), 2 * (changes // 3))
    updated, deleted = ids[: changes // 3], ids[changes // 3 :]
    name = sql.Identifier(table)
    with db.conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = text || ' (changed)' WHERE id = ANY(%s)").format(name), (updated,))
        cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(name), (deleted,))
        first_new = rows + 1 + seed * changes
        cur.execute(
            sql.SQL("INSERT INTO {} SELECT g, 'a new row ' || g FROM generate_series(%s, %s) g").format(name),
            (first_new, first_new + changes - 2 * (changes // 3) - 1),
        )


def timed_run(db: Database, table: str) -> tuple[float, int]:
    started = time.perf_counter()
    report = Ingestor(db.dsn, table=table, **OPTIONS).run()
    return time.perf_counter() - started, report.rows


def measure(db: Database, rows: int, changes: int) -> dict[str, float]:
    table = make_table(db, rows)
    change(db, table, rows, changes, seed=0)
    untracked_s, _ = timed_run(db, table)
    ingestor = Ingestor(db.dsn, table=table, **OPTIONS)
    ingestor.track()
    ingestor.run()  # the full pass that tracking asks for first
    change(db, table, rows, changes, seed=1)
    tracked_s, written = timed_run(db, table)
    db.drop(f"{table}_embeddings")
    return {"rows": rows, "untracked_s": untracked_s, "tracked_s": tracked_s, "written": written}


def follow_lag(db: Database, model: Any, changes: int, per_s: float) -> tuple[float, float]:
    """p50 and p99 of commit-to-write lag, in seconds, for ``changes`` single-row updates at ``per_s``."""
    table = make_table(db, 10_000, model)
    options = {**OPTIONS, "model": model}
    Ingestor(db.dsn, table=table, **options).track()
    follower = Ingestor(db.dsn, table=table, poll_interval_s=60, **options)
    thread = threading.Thread(target=follower.follow)
    thread.start()
    committed: dict[int, float] = {}
    name = sql.Identifier(table)
    try:
        _wait_for(
            db,
            sql.SQL("SELECT NOT EXISTS (SELECT FROM {} WHERE key = 'resync')").format(
                sql.Identifier(f"{table}_embedding_meta")
            ),
        )  # the full pass that tracking asks for first
        for n in range(changes):
            row_id = 2 + n
            with db.conn.cursor() as cur:
                cur.execute(
                    sql.SQL("UPDATE {} SET text = %s WHERE id = %s").format(name), (f"changed text {n}", row_id)
                )
            committed[row_id] = time.time()
            time.sleep(1 / per_s)
        written = sql.SQL(
            "SELECT count(*) = %s FROM {t} t JOIN {s} s ON s.id = t.id "
            "WHERE t.id = ANY(%s) AND t.text_hash = md5(s.text)"
        ).format(t=sql.Identifier(f"{table}_embeddings"), s=name)
        _wait_for(db, written, len(committed), list(committed))
        with db.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, extract(epoch FROM embedded_at) FROM {} WHERE id = ANY(%s)").format(
                    sql.Identifier(f"{table}_embeddings")
                ),
                (list(committed),),
            )
            lags = [float(at) - committed[row_id] for row_id, at in cur.fetchall()]
    finally:
        follower.stop()
        thread.join()
        db.drop(f"{table}_embeddings")
    quantiles = statistics.quantiles(lags, n=100)
    return quantiles[49], quantiles[98]


def _wait_for(db: Database, query: sql.Composable, *params: Any, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.conn.cursor() as cur:
            cur.execute(query, params or None)
            if cur.fetchone()[0]:
                return
        time.sleep(0.05)
    raise RuntimeError("the follower did not catch up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", type=positive_int, default=[100_000, 1_000_000])
    parser.add_argument("--changes", type=positive_int, default=1000)
    parser.add_argument("--lag-changes", type=positive_int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="changes a second in the lag measurement")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the real model for the lag ('none': skip)")
    args = parser.parse_args()
    db = Database()
    try:
        print(f"| rows | untracked run after {args.changes:,} changes, s | tracked run, s |")
        print("|---:|---:|---:|")
        for rows in args.rows:
            figures = measure(db, rows, args.changes)
            print(f"| {rows:,} | {figures['untracked_s']:.2f} | {figures['tracked_s']:.2f} |", flush=True)
        print(f"\n| follower ({args.lag_changes} updates at {args.rate:g}/s) | lag p50, s | lag p99, s |")
        print("|---|---:|---:|")
        models = [("stand-in (HashEncoder)", OPTIONS["model"])]
        if args.model != "none":
            models.append((args.model, args.model))
        for label, model in models:
            p50, p99 = follow_lag(db, model, args.lag_changes, args.rate)
            print(f"| {label} | {p50:.3f} | {p99:.3f} |", flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
