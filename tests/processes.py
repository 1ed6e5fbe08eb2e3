"""Helpers for tests that run ``embedlib`` as a user would: in processes of its own."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time

from psycopg2 import sql


def start_cli(*args: str, dsn: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("EMBEDLIB_DSN", "DATABASE_URL", "EMBED_WORKERS")}
    environment["EMBEDLIB_DSN"] = dsn
    return subprocess.Popen(
        [sys.executable, "-m", "embedlib", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def stored_count(conn, table: str) -> int:
    target = f"{table}_embeddings"
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(target).as_string(conn),))
        if not cur.fetchone()[0]:
            return 0
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(target)))
        return int(cur.fetchone()[0])


def wait_for_rows(conn, table: str, proc: subprocess.Popen[str], at_least: int) -> None:
    deadline = time.monotonic() + 120
    while stored_count(conn, table) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run stored nothing in 120 s"
        time.sleep(0.05)


def assert_every_row_matches_its_text(tables, table: str, texts: list[str]) -> None:
    """One target row per source row, each with its own text's hash."""
    rows = tables.rows(table, "id, text_hash")
    assert [row_id for row_id, _ in rows] == list(range(1, len(texts) + 1))
    for row_id, text_hash in rows:
        assert text_hash == hashlib.md5(texts[row_id - 1].encode()).hexdigest()


def distinct(texts: list[str], n: int) -> list[str]:
    unique = list(dict.fromkeys(texts))[:n]
    assert len(unique) == n
    return unique


def run_cli(*args: str, dsn: str | None, env: dict[str, str] | None = None, stdin: str | None = None):
    environment = {k: v for k, v in os.environ.items() if k not in ("EMBEDLIB_DSN", "DATABASE_URL", "EMBED_WORKERS")}
    if dsn:
        environment["EMBEDLIB_DSN"] = dsn
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "embedlib", *args],
        capture_output=True,
        text=True,
        env=environment,
        input=stdin,
        timeout=300,
    )


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def half_duplicated(sample_texts: list[str], rows: int, seed: int) -> list[str]:
    """``rows`` texts, each distinct one held by two rows far apart."""
    distinct = list(dict.fromkeys(sample_texts))[: rows // 2]
    texts = distinct * 2
    random.Random(seed).shuffle(texts)
    return texts


def assert_shared_exactly_once(conn, tables, table: str, texts: list[str], summary: list[tuple[int, int]]) -> None:
    """Runs that shared ``table`` (their (rows, encoded) in ``summary``) wrote every row once, encoded
    every distinct text once, and left nothing behind."""
    assert sum(rows for rows, _ in summary) == len(texts)
    assert sum(encoded for _, encoded in summary) == len(set(texts))  # no text encoded twice across the runs
    assert sum(rows > 0 for rows, _ in summary) >= 2, "one run did everything: the test shows no sharing"
    assert_every_row_matches_its_text(tables, table, texts)
    # Statistics reach the server when each run's backends exit: wait for them.
    deadline = time.monotonic() + 30
    while (writes := table_writes(conn, table))[0] < len(texts) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert writes == (len(texts), 0, 0), "a row was written more than once"
    assert side_rows(conn, table) == {"errors": 0, "leases": 0, "claims": 0}


def table_writes(conn, table: str) -> tuple[int, int, int]:
    """(inserted, updated, deleted) rows of the target, from the server's statistics.

    An insert that was rolled back counts too: a row written twice in any
    way (an upsert, a COPY that met a row already there) shows here.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relid = to_regclass(%s)",
            (sql.Identifier(f"{table}_embeddings").as_string(conn),),
        )
        inserted, updated, deleted = cur.fetchone()
    return int(inserted), int(updated), int(deleted)


def side_rows(conn, table: str) -> dict[str, int]:
    counts = {}
    with conn.cursor() as cur:
        for kind in ("errors", "leases", "claims"):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_embedding_{kind}")))
            counts[kind] = int(cur.fetchone()[0])
    return counts
