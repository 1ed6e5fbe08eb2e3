"""Print the benchmark tables: ``python -m benchmarks.compare [SUITE ...] [--rounds N]``.

Suites (all by default, in this order):
  model      embedlib end to end against the model alone (one encode call, same
             batch size): distinct short sentences, distinct mixed-length texts,
             and real text with half its rows duplicated
  executors  serial, pipelined, threaded and process executors on the real model
  original   embedlib against the original design (benchmarks/original.py) at
             1, 2, 4 and 8 workers, on mixed-length text
  dbpath     the database path alone (HashEncoder, 384 dimensions) against a raw
             binary COPY of the same rows, 10,000 to 1,000,000 rows, with peak memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks import original, workloads
from benchmarks.measure import Database, ingest_once, side_by_side, table_of, timed, warm_model
from embedlib import ProcessExecutor
from embedlib.cli import positive_int

BATCH_SIZE = 100


def model_suite(db: Database, rounds: int) -> list[str]:
    model = warm_model()
    tables = []
    cases = [
        ("distinct short sentences", workloads.short_distinct(2000)),
        ("distinct mixed-length texts", workloads.mixed_length(400)),
        ("real text, half its rows duplicated", workloads.half_duplicated(2000)),
    ]
    for title, texts in cases:
        table = db.load(texts)
        contenders = {
            "model alone": lambda texts=texts: timed(lambda: model.encode(texts, batch_size=BATCH_SIZE)),
            "embedlib (default executor)": lambda table=table: ingest_once(db, table, batch_size=BATCH_SIZE),
        }
        for budget in (0, 1024, 4096):  # the default is 2048
            contenders[f"embedlib, --batch-tokens {budget}"] = lambda table=table, budget=budget: ingest_once(
                db, table, batch_size=BATCH_SIZE, batch_tokens=budget
            )
        results = side_by_side(contenders, rows=len(texts), rounds=rounds)
        tables.append(table_of(f"{title}, batch size {BATCH_SIZE}", results, "model alone"))
    return tables


def executors_suite(db: Database, rounds: int) -> list[str]:
    texts = workloads.short_distinct(1000)
    table = db.load(texts)
    modes = [("serial", 1), ("pipelined", 1), ("pipelined", 2), ("threaded", 2), ("threaded", 4)]
    model = warm_model()
    contenders = {"model alone": lambda: timed(lambda: model.encode(texts, batch_size=BATCH_SIZE))}
    contenders.update(
        {
            f"{executor} x{workers}": lambda e=executor, w=workers: ingest_once(
                db, table, batch_size=BATCH_SIZE, executor=e, workers=w
            )
            for executor, workers in modes
        }
    )
    # Process pools are passed in, so they stay warm between rounds: starting one
    # (spawn, import torch, load the model) is timed once, separately.
    pools = {workers: ProcessExecutor(workers) for workers in (1, 2)}
    startup = {}
    for workers, pool in pools.items():
        cold, _ = ingest_once(db, table, batch_size=BATCH_SIZE, executor=pool)
        warm, _ = ingest_once(db, table, batch_size=BATCH_SIZE, executor=pool)
        startup[workers] = cold - warm
        contenders[f"process x{workers} ({pool.torch_threads} torch threads each)"] = lambda pool=pool: ingest_once(
            db, table, batch_size=BATCH_SIZE, executor=pool
        )
    try:
        results = side_by_side(contenders, rows=len(texts), rounds=rounds)
    finally:
        for pool in pools.values():
            pool.shutdown()
    title = f"executors, {len(texts):,} distinct short sentences, batch size {BATCH_SIZE}"
    notes = ", ".join(f"x{w} {s:.1f} s" for w, s in startup.items())
    return [table_of(title, results, "serial x1") + f"\n\nprocess pool start-up, paid once per pool: {notes}"]


def original_suite(db: Database, rounds: int) -> list[str]:
    model = warm_model()
    texts = workloads.mixed_length(400)
    table = db.load(texts)
    contenders = {
        f"original design x{workers}": lambda w=workers: timed(
            lambda: original.ingest(db.dsn, table, model, BATCH_SIZE, w)
        )
        for workers in (1, 2, 4, 8)
    }
    contenders["embedlib (default executor)"] = lambda: ingest_once(db, table, batch_size=BATCH_SIZE)
    results = side_by_side(contenders, rows=len(texts), rounds=rounds)
    best_original = max((r for r in results if r.name.startswith("original")), key=lambda r: r.rows_per_s)
    return [
        table_of(
            f"against the original design, {len(texts)} distinct mixed-length texts, batch size {BATCH_SIZE}",
            results,
            best_original.name,
        )
    ]


def dbpath_suite(db: Database, rounds: int, sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> list[str]:
    """Each size in a fresh process, the sizes in turns, round after round; each size's best round counts.

    In turns, so that the machine's drift (shared, noisy: the same size has
    measured 25% apart an hour later) falls on every size alike, and the
    flatness across sizes is measured side by side.
    """
    best: dict[int, dict[str, Any]] = {}
    for _ in range(rounds):
        for rows in sizes:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.dbpath", str(rows)], check=True, capture_output=True, text=True
            ).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            kept = best.setdefault(rows, figures)
            for key in ("embedlib_rows_per_s", "raw_rows_per_s", "peak_rss_mb"):
                kept[key] = max(kept[key], figures[key])
    lines = [
        f"\ndatabase path alone: HashEncoder (384 dimensions), batch size 1,000, each size in a fresh process, "
        f"sizes in turns, best of {rounds} rounds\n",
        "| rows | raw binary COPY rows/s | embedlib rows/s | x raw COPY | executor | embedlib peak RSS MB |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for rows, figures in best.items():
        lines.append(
            f"| {rows:,} | {figures['raw_rows_per_s']:,.0f} | {figures['embedlib_rows_per_s']:,.0f} | "
            f"{figures['embedlib_rows_per_s'] / figures['raw_rows_per_s']:.2f} | {figures['executor']} | "
            f"{figures['peak_rss_mb']:.0f} |"
        )
    rates = [figures["embedlib_rows_per_s"] for figures in best.values()]
    lines.append(f"\nembedlib's slowest size runs at {min(rates) / max(rates):.2f} of its fastest")
    return ["\n".join(lines)]


SUITES = {"model": model_suite, "executors": executors_suite, "original": original_suite, "dbpath": dbpath_suite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--rounds", type=positive_int, default=3)
    args = parser.parse_args()
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r} (choose from {', '.join(SUITES)})")
    db = Database()
    try:
        for name in args.suites or list(SUITES):
            started = time.perf_counter()
            for table in SUITES[name](db, args.rounds):
                print(table, flush=True)
            print(f"\n({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
