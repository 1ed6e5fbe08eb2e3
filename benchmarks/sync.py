"""A table that changes: ``python -m benchmarks.sync [ROWS ...] [--changes N] [--rounds N]``.

For each size, a table of ROWS numbered texts is embedded once with the fast
HashEncoder (384 dimensions, batch size 1,000); then, best of ``--rounds``:

- a run with nothing to do;
- a run after N changes (default 1,000): a third updates of texts, a third
  deletes, a third inserts, spread over the table.

Both runs read the whole source span by span (an untracked table), so their
time grows with the table, not with the changes: the figure that change
capture (docs/guide.md#following-a-table) is to make flat.
"""

from __future__ import annotations

import argparse
import random
import time

from psycopg2 import sql

from benchmarks import workloads
from benchmarks.measure import Database
from embedlib import Ingestor
from embedlib.cli import positive_int
from embedlib.testing import HashEncoder

OPTIONS = {"model": HashEncoder(384), "batch_size": 1000}


def change(db: Database, table: str, rows: int, changes: int, seed: int) -> None:
    """``changes`` changes spread over ``table``: updates, deletes and inserts in equal parts."""
    ids = random.Random(seed).sample(range(1, rows + 1), 2 * (changes // 3))
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


def measure(db: Database, rows: int, changes: int, rounds: int) -> dict[str, float]:
    table = db.load(workloads.numbered(rows))
    Ingestor(db.dsn, table=table, **OPTIONS).run()
    idle, changed = [], []
    for round_ in range(rounds):
        idle.append(timed_run(db, table)[0])
        change(db, table, rows, changes, seed=round_)
        changed.append(timed_run(db, table)[0])
    return {"rows": rows, "nothing_to_do_s": min(idle), "after_changes_s": min(changed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", type=positive_int, default=[100_000, 1_000_000])
    parser.add_argument("--changes", type=positive_int, default=1000)
    parser.add_argument("--rounds", type=positive_int, default=2)
    args = parser.parse_args()
    db = Database()
    try:
        print(f"| rows | a run with nothing to do, s | a run after {args.changes:,} changes, s |")
        print("|---:|---:|---:|")
        for rows in args.rows:
            figures = measure(db, rows, args.changes, args.rounds)
            print(f"| {rows:,} | {figures['nothing_to_do_s']:.2f} | {figures['after_changes_s']:.2f} |", flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
