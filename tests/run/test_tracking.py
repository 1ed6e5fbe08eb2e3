"""Change capture: a tracked table's runs embed exactly the rows that changed, read from its queue,
and leave the target as a fresh full run would."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.run.report import IngestReport
from embedlib.testing import HashEncoder
from tests.run.test_follow import source_rows, target_rows, wait_until_in_step

# Everything a fresh full run decides for a row, the vector's digest included.
COMPARED = "id, md5(embedding::text), model, text_hash, char_length, token_count, truncated, norm, frequency"


def execute(conn, statement: str, table: str, *params) -> None:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(sql.Identifier(table)), params or None)


def queue_depth(conn, table: str) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_embedding_queue")))
        return int(cur.fetchone()[0])


def stored(conn, target: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT " + COMPARED + " FROM {} ORDER BY id").format(sql.Identifier(target)))
        return cur.fetchall()


def tracked_table(conn, tables, texts: list[str]) -> tuple[str, Ingestor]:  # type: ignore[no-untyped-def]
    """A table of ``texts`` (with a column beside the text), embedded, tracked, and run once more."""
    table = tables.source(texts)
    execute(conn, "ALTER TABLE {} ADD COLUMN note text", table)
    ingestor = Ingestor(table=table, model=HashEncoder(), dsn=conn.dsn)
    ingestor.run()
    assert ingestor.track() is True
    assert ingestor.track() is False  # idempotent
    report = ingestor.run()  # the full pass that tracking asks for first: nothing changed
    assert (report.tracked, report.rows, report.encoded) == (True, 0, 0)
    return table, ingestor


def test_a_tracked_run_embeds_exactly_the_changed_rows_and_matches_a_fresh_full_run(conn, tables):
    texts = [f"sentence number {i}" for i in range(1, 41)] + ["a shared text"] * 3
    table, ingestor = tracked_table(conn, tables, texts)
    execute(conn, "INSERT INTO {} (id, text) VALUES (101, 'a new row'), (102, 'a shared text')", table)
    execute(conn, "UPDATE {} SET text = 'a changed text' WHERE id IN (2, 3)", table)
    execute(conn, "UPDATE {} SET text = text WHERE id = 4", table)  # the text as it was: nothing queued
    execute(conn, "UPDATE {} SET note = 'not the text' WHERE id = 5", table)  # nor for another column
    execute(conn, "DELETE FROM {} WHERE id IN (6, 41)", table)  # 41 held a shared text
    execute(conn, "UPDATE {} SET text = '   ' WHERE id = 7", table)  # blanked: its vector goes
    execute(conn, "UPDATE {} SET id = 1007 WHERE id = 8", table)  # a new id: one row gone, one new
    assert queue_depth(conn, table) == 9

    report = ingestor.run()
    # Encoded: 'a new row', 'a changed text' (once for rows 2 and 3), and row 1007's text; row 102
    # reuses the stored vector of 'a shared text'.
    assert (report.rows, report.encoded, report.removed, report.skipped) == (5, 3, 3, 1)
    assert queue_depth(conn, table) == 0
    assert target_rows(conn, table) == {i: h for i, h in source_rows(conn, table).items() if i != 7}

    fresh = Ingestor(table=table, target=f"{table}_fresh", model=HashEncoder(), dsn=conn.dsn)
    tables.created.append(f"{table}_fresh")
    tables.created.extend(f"{table}_fresh_{kind}" for kind in ("errors", "leases", "claims", "meta"))
    fresh.run()
    assert stored(conn, f"{table}_embeddings") == stored(conn, f"{table}_fresh")
    assert ingestor.run().did_something is False

    # A change the triggers do not see (replica mode fires none) is not found: runs read the queue alone.
    with conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute(sql.SQL("UPDATE {} SET text = 'unseen' WHERE id = 1").format(sql.Identifier(table)))
        cur.execute("RESET session_replication_role")
    assert ingestor.run().rows == 0


def test_truncate_empties_the_target_and_rows_after_it_are_embedded(conn, tables):
    table, ingestor = tracked_table(conn, tables, [f"sentence number {i}" for i in range(20)])
    execute(conn, "TRUNCATE {}", table)
    execute(conn, "INSERT INTO {} (id, text) VALUES (1, 'after the truncate')", table)
    report = ingestor.run()
    assert (report.rows, report.removed) == (1, 19)
    assert target_rows(conn, table) == source_rows(conn, table)


def test_untrack_leaves_no_trigger_function_or_queue(conn, tables):
    table, ingestor = tracked_table(conn, tables, ["one", "two"])
    assert ingestor.untrack() is True
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (table,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE %s", (f"{table}%",))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT to_regclass(%s)", (f"{table}_embedding_queue",))
        assert cur.fetchone()[0] is None
        cur.execute(
            sql.SQL("SELECT key FROM {} WHERE key <> 'source' AND key NOT LIKE 'model:%%'").format(
                sql.Identifier(f"{table}_embedding_meta")
            )
        )
        assert cur.fetchall() == []
    assert ingestor.untrack() is False
    execute(conn, "UPDATE {} SET text = 'changed after untrack' WHERE id = 1", table)
    report = ingestor.run()  # untracked again: the whole table is read
    assert (report.tracked, report.rows) == (False, 1)


def test_a_follower_wakes_on_a_change_and_a_burst_ends_with_the_last_text(conn, tables):
    table, _ = tracked_table(conn, tables, [f"sentence number {i}" for i in range(10)])
    follower = Ingestor(table=table, model=HashEncoder(), dsn=conn.dsn, poll_interval_s=600)
    cycles: list[IngestReport] = []
    thread = threading.Thread(target=follower.follow, kwargs={"on_cycle": cycles.append})
    thread.start()
    try:
        for n in range(30):  # each its own transaction, while the follower works
            execute(conn, "UPDATE {} SET text = %s WHERE id = 1", table, f"burst text {n}")
        execute(conn, "INSERT INTO {} (id, text) VALUES (50, 'a row after the burst')", table)
        # No poll in 600 s: only the triggers' NOTIFY can wake the follower.
        wait_until_in_step(conn, table, timeout_s=60)
    finally:
        follower.stop()
        thread.join(timeout=60)
    assert target_rows(conn, table)[1] == hashlib.md5(b"burst text 29").hexdigest()
    assert all(c.tracked for c in cycles) and queue_depth(conn, table) == 0


def test_followers_and_a_plain_run_share_a_tracked_table_encoding_each_changed_text_once(conn, tables):
    followers = 2
    table, _ = tracked_table(conn, tables, [f"sentence number {i}" for i in range(100)])
    reports: list[IngestReport] = []
    lock = threading.Lock()

    def keep(report: IngestReport) -> None:
        with lock:
            reports.append(report)

    runs = [
        Ingestor(table=table, model=HashEncoder(), dsn=conn.dsn, batch_size=16, window_size=64)
        for _ in range(followers)
    ]
    threads = [threading.Thread(target=run.follow, kwargs={"on_cycle": keep}) for run in runs]
    for thread in threads:
        thread.start()
    try:
        new_texts = [f"a text added later {i % 150}" for i in range(300)]  # 150 texts, each twice
        for start in range(0, 300, 30):
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL("INSERT INTO {} (id, text) VALUES (%s, %s)").format(sql.Identifier(table)),
                    [(1000 + i, new_texts[i]) for i in range(start, start + 30)],
                )
            if start == 150:
                keep(Ingestor(table=table, model=HashEncoder(), dsn=conn.dsn, batch_size=16).run())
        wait_until_in_step(conn, table, timeout_s=120)
    finally:
        for run in runs:
            run.stop()
        for thread in threads:
            thread.join(timeout=60)
    assert sum(r.rows for r in reports) == 300
    assert sum(r.encoded for r in reports) == 150


FOLLOWER = """
import sys
from embedlib import Ingestor
from embedlib.testing import HashEncoder
Ingestor(sys.argv[1], table=sys.argv[2], model=HashEncoder(), batch_size=8, poll_interval_s=600).follow()
"""


def start_follower(dsn: str, table: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", FOLLOWER, dsn, table], stdout=subprocess.DEVNULL)


def test_a_follower_killed_mid_stream_loses_nothing_when_another_starts(dsn, conn, tables):
    table, _ = tracked_table(conn, tables, [f"sentence number {i}" for i in range(10)])
    follower = start_follower(dsn, table)
    try:
        for n in range(400):
            execute(conn, "INSERT INTO {} (id, text) VALUES (%s, %s)", table, 100 + n, f"streamed text {n}")
            if n == 200:
                wait_for_vectors(conn, table, at_least=50)
                follower.send_signal(signal.SIGKILL)  # mid-stream: whatever it held is let go
                follower.wait(timeout=30)
        assert queue_depth(conn, table) > 0  # changes made while no follower runs...
        follower = start_follower(dsn, table)
        wait_until_in_step(conn, table, timeout_s=120)  # ...are embedded by the next one
    finally:
        follower.kill()
        follower.wait(timeout=30)
    assert queue_depth(conn, table) == 0


def wait_for_vectors(conn, table: str, at_least: int, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while len(target_rows(conn, table)) < 10 + at_least:
        assert time.monotonic() < deadline, "the follower embeds nothing"
        time.sleep(0.02)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_any_sequence_of_changes_the_target_equals_a_fresh_full_runs(conn, tables, seed):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "the same text", "", None]
    table, ingestor = tracked_table(conn, tables, [f"row {i}" for i in range(1, 31)])
    next_id = 100
    for step in range(60):
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(table)))
            ids = [row_id for (row_id,) in cur.fetchall()]
        op = rng.choice(
            ["insert", "update", "update", "same", "delete", "new id"] + (["truncate"] if step == 30 else [])
        )
        if op == "insert" or not ids:
            execute(conn, "INSERT INTO {} (id, text) VALUES (%s, %s)", table, next_id, rng.choice(words))
            next_id += 1
        elif op == "update":
            execute(conn, "UPDATE {} SET text = %s WHERE id = %s", table, rng.choice(words), rng.choice(ids))
        elif op == "same":
            execute(conn, "UPDATE {} SET text = text WHERE id = %s", table, rng.choice(ids))
        elif op == "delete":
            execute(conn, "DELETE FROM {} WHERE id = %s", table, rng.choice(ids))
        elif op == "new id":
            execute(conn, "UPDATE {} SET id = %s WHERE id = %s", table, next_id, rng.choice(ids))
            next_id += 1
        else:
            execute(conn, "TRUNCATE {}", table)
        if rng.random() < 0.2:
            ingestor.run()
    ingestor.run()
    fresh = f"{table}_fresh"
    tables.created.extend([fresh, *(f"{fresh}_{kind}" for kind in ("errors", "leases", "claims", "meta"))])
    Ingestor(table=table, target=fresh, model=HashEncoder(), dsn=conn.dsn).run()
    assert stored(conn, f"{table}_embeddings") == stored(conn, fresh)
    assert queue_depth(conn, table) == 0
