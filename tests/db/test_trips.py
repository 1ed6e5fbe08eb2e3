"""Round trips to the server are counted, per run and per batch: what a distant database charges for."""

from __future__ import annotations

import subprocess
import sys

from psycopg2 import sql

from embedlib import Ingestor
from embedlib.db.session import connect
from embedlib.testing import HashEncoder


def test_a_statement_a_transaction_and_a_copy_count_as_the_protocol_says(dsn):
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # BEGIN, then the statement
            assert conn.round_trips == 2
            cur.execute("SELECT 2")
            assert conn.round_trips == 3
        conn.commit()
        assert conn.round_trips == 4
        conn.commit()  # nothing open: nothing sent
        assert conn.round_trips == 4
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2")  # several statements, one message
            assert conn.round_trips == 5
    finally:
        conn.close()


def test_a_first_load_writes_each_batch_in_one_copy_and_reports_its_round_trips(dsn, tables):
    table = tables.source([f"sentence number {i}" for i in range(100)])
    report = Ingestor(dsn, table=table, model=HashEncoder(), batch_size=10, executor="serial").run()
    assert (report.rows, report.batches) == (100, 10)
    assert report.write_round_trips == 2 * report.batches  # a COPY: its statement, then its rows
    assert report.round_trips > report.setup_round_trips + report.write_round_trips  # reading did some
    reading = report.round_trips - report.setup_round_trips - report.write_round_trips
    # One window: its lease, its read, the removal of vectors of deleted rows in its span; the
    # lease that finds nothing left and that removal past the last id; the errors that are resolved
    # and the release of the run's leases and claims, at the end. Each one round trip.
    assert reading == 7


def test_rows_written_again_cost_three_round_trips_a_batch(dsn, conn, tables):
    table = tables.source([f"sentence number {i}" for i in range(100)])
    Ingestor(dsn, table=table, model=HashEncoder(), batch_size=10, executor="serial").run()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET text = text || ' again'").format(sql.Identifier(table)))
    report = Ingestor(dsn, table=table, model=HashEncoder(), batch_size=10, executor="serial").run()
    assert (report.rows, report.batches) == (100, 10)
    # Into the staging table (its statement, its rows), then the upsert and the stage emptied in one
    # message; and the staging table made, once.
    assert report.write_round_trips == 3 * report.batches + 1
    stored = tables.embeddings(table)
    assert len(stored) == 100


def test_debug_shows_the_round_trips(dsn, tables):
    table = tables.source([f"sentence number {i}" for i in range(30)])
    result = subprocess.run(
        [sys.executable, "-m", "embedlib", "ingest", table, "10", "--dsn", dsn, "--debug"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "round trips" in line)
    assert "writing 3 batches (2.0 a batch)" in line
