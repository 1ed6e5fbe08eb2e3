"""``embedlib track``, ``untrack`` and ``status`` on a tracked table; a follower's metrics; and the one
line a role without the rights to track gets."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
import uuid

import psycopg2.extensions
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.cli.watching import Watching
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli
from tests.run.test_follow import wait_until_in_step


def test_track_status_and_untrack_from_the_command_line(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(5)])
    Ingestor(dsn, table=table, model=HashEncoder()).run()
    tracked = run_cli("track", table, dsn=dsn)
    assert tracked.returncode == 0 and "reads the whole table once" in tracked.stdout, tracked.stderr
    assert "tracked already" in run_cli("track", table, dsn=dsn).stdout
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(sql.Identifier(table)))
    status = json.loads(run_cli("status", table, "--json", dsn=dsn).stdout)
    assert (status["tracked"], status["queue_depth"]) == (True, 1)
    assert status["queue_age_s"] >= 0
    assert "1 changes queued" in run_cli("status", table, dsn=dsn).stdout
    untracked = run_cli("untrack", table, dsn=dsn)
    assert untracked.returncode == 0 and "no longer tracked" in untracked.stdout
    assert json.loads(run_cli("status", table, "--json", dsn=dsn).stdout)["tracked"] is False


def test_a_role_without_the_rights_to_track_gets_one_line_and_nothing_changes(dsn, conn, tables):
    table = tables.source(["one", "two"])
    role = f"embedlib_reader_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(table), sql.Identifier(role)))
        cur.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    try:
        as_reader = psycopg2.extensions.make_dsn(dsn, user=role)
        result = run_cli("track", table, dsn=as_reader)
        assert_clean_failure(result, f"role {role} lacks TRIGGER on public.{table} and CREATE on schema public")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass", (table,))
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT to_regclass(%s)", (f"{table}_embeddings",))
            assert cur.fetchone()[0] is None  # nothing made before the refusal
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, table: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    pattern = re.compile(r'^(embedlib_\w+)\{table="' + re.escape(table) + r'"\} (\S+)$', re.M)
    return {name: float(value) for name, value in pattern.findall(text)}


def test_a_follower_serves_prometheus_metrics(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(8)])
    ingestor = Ingestor(dsn, table=table, model=HashEncoder(), poll_interval_s=0.05)
    ingestor.run()
    ingestor.track()
    port = free_port()
    watching = Watching(table, show=False, metrics_port=port, metrics_host="127.0.0.1")
    thread = threading.Thread(target=ingestor.follow, kwargs={"on_cycle": watching, "every_cycle": True})
    thread.start()
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("INSERT INTO {} VALUES (100, 'a new row'), (101, 'another')").format(sql.Identifier(table))
            )
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(sql.Identifier(table)))
        wait_until_in_step(conn, table)
        deadline = time.monotonic() + 30
        while (metrics := scrape(port, table)).get("embedlib_rows_removed_total", 0) < 1:
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
    finally:
        ingestor.stop()
        thread.join(timeout=60)
        watching.close()
    assert metrics["embedlib_rows_embedded_total"] == 2 and metrics["embedlib_rows_removed_total"] == 1
    assert metrics["embedlib_queue_depth"] == 0 and metrics["embedlib_runs_total"] >= 1


def test_a_metrics_port_in_use_is_one_line(dsn, tables):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("ingest", tables.source(["one"]), "--follow", "--metrics-port", str(port), dsn=dsn)
    assert_clean_failure(result, f"cannot serve metrics on 127.0.0.1:{port}")
