"""Following a table: after the backfill, inserts, updates and deletes are embedded (or removed) as
they come, with the model loaded, until a stop; the report sums every run."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.run.report import IngestReport
from embedlib.testing import HashEncoder
from tests.processes import start_cli, wait_for_rows


def target_rows(conn, table: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    """id -> text hash, as stored (nothing before the target is made)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(f"{table}_embeddings").as_string(conn),))
        if not cur.fetchone()[0]:
            return {}
        cur.execute(sql.SQL("SELECT id, text_hash FROM {}").format(sql.Identifier(f"{table}_embeddings")))
        return dict(cur.fetchall())


def source_rows(conn, table: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, md5(text) FROM {}").format(sql.Identifier(table)))
        return dict(cur.fetchall())


def change(conn, table: str) -> None:  # type: ignore[no-untyped-def]
    """An insert, an update of a text, an update that keeps the text, and a delete."""
    name = sql.Identifier(table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} VALUES (100, 'a row added while following')").format(name))
        cur.execute(sql.SQL("UPDATE {} SET text = 'a text changed while following' WHERE id = 2").format(name))
        cur.execute(sql.SQL("UPDATE {} SET text = text WHERE id = 3").format(name))
        cur.execute(sql.SQL("DELETE FROM {} WHERE id = 4").format(name))


def wait_until_in_step(conn, table: str, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while target_rows(conn, table) != source_rows(conn, table):
        assert time.monotonic() < deadline, "the follower did not catch up"
        time.sleep(0.05)


def test_a_follower_embeds_changes_as_they_come_and_stops_when_asked(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(10)])
    cycles: list[IngestReport] = []
    ingestor = Ingestor(dsn, table=table, model=HashEncoder(), poll_interval_s=0.05)
    reports: list[IngestReport] = []
    follower = threading.Thread(target=lambda: reports.append(ingestor.follow(on_cycle=cycles.append)))
    follower.start()
    try:
        wait_until_in_step(conn, table)
        change(conn, table)
        wait_until_in_step(conn, table)
    finally:
        ingestor.stop()
        follower.join(timeout=60)
    assert not follower.is_alive()
    [report] = reports
    # 10 rows, then the added row and the changed text: the untouched update and the delete encode nothing
    assert (report.rows, report.encoded, report.removed, report.stopped) == (12, 12, 1, True)
    assert sum(c.rows for c in cycles) == 12 and all(c.did_something for c in cycles)
    assert target_rows(conn, table)[2] == hashlib.md5(b"a text changed while following").hexdigest()


@pytest.mark.model
def test_the_follow_command_keeps_a_table_in_step_and_sigterm_ends_it_with_its_report(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(10)])
    proc = start_cli("ingest", table, "--follow", "--poll-interval", "0.1", "--json", dsn=dsn)
    try:
        wait_for_rows(conn, table, proc, 10)
        change(conn, table)
        wait_until_in_step(conn, table)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    report = json.loads(out)
    assert (report["rows"], report["removed"], report["stopped"]) == (12, 1, True)
