"""Helpers for tests that run ``embedlib`` as a user would: in processes of its own."""

from __future__ import annotations

import hashlib
import os
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
