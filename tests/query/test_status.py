"""``embedlib status`` and ``Ingestor.status()``: exact counts, nothing written, no model loaded."""

from __future__ import annotations

import json

from psycopg2 import sql

from embedlib import Ingestor
from embedlib.testing import FailingEncoder
from tests.processes import assert_clean_failure, run_cli


def test_status_counts_what_a_run_would_do_and_changes_nothing(dsn, conn, tables):
    texts = [f"sentence number {i}" for i in range(40)] + ["poison", None]
    table = tables.source(texts)
    encoder = FailingEncoder(poison=["poison"])
    before = Ingestor(dsn, table=table, model=encoder, max_attempts=1).status()
    assert (before.target, before.rows, before.embedded, before.pending) == (None, 42, 0, 42)
    Ingestor(dsn, table=table, model=encoder, batch_size=10, max_attempts=1).run()
    with conn.cursor() as cur:
        name = sql.Identifier(table)
        cur.execute(sql.SQL("UPDATE {} SET text = 'changed ' || id WHERE id <= 5").format(name))
        cur.execute(sql.SQL("DELETE FROM {} WHERE id BETWEEN 6 AND 8").format(name))
    found = Ingestor(dsn, table=table, model=encoder, max_attempts=1).status()
    assert found.target is not None
    # 39 rows left: 32 embedded as they are, 5 changed (pending), 1 given up (poison), 1 blank (skipped)
    assert (found.rows, found.embedded, found.pending, found.pending_with_text) == (39, 32, 5, 5)
    assert (found.given_up, found.orphans, found.runs, found.other_models) == (1, 3, 0, 0)
    again = Ingestor(dsn, table=table, model=encoder, max_attempts=1).status()
    assert again == found  # reading it changed nothing
    report = Ingestor(dsn, table=table, model=encoder, batch_size=10, max_attempts=1).run()
    assert (report.encoded, report.removed) == (found.pending_with_text, found.orphans)


def test_status_command_prints_json_and_refuses_a_missing_table(dsn, tables):
    table = tables.source(["one", "two"])
    result = run_cli("status", table, "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["rows"], shown["pending"], shown["target"]) == (2, 2, None)
    assert_clean_failure(run_cli("status", "no_such_table", dsn=dsn), "does not exist")


def test_status_counts_the_runs_holding_leases_while_they_live(dsn, conn, tables):
    from embedlib.db.session import connect
    from embedlib.source.sharing import Sharing
    from embedlib.source.tables import inspect_source
    from embedlib.store.provenance import served_target

    table = tables.source([f"sentence number {i}" for i in range(10)])
    Ingestor(dsn, table=table, model=FailingEncoder()).run()
    ingestor = Ingestor(dsn, table=table, model=FailingEncoder())
    source = inspect_source(conn, table, "id", "text")
    target = served_target(conn, source, None)
    assert target is not None
    held = connect(dsn)
    try:
        sharing = Sharing()  # a run, as far as other runs can tell: a live lock and a lease
        sharing.hold(held)
        sharing.start(source, target, "hash-encoder")
        assert sharing.take(held, None, 5) is not None
        assert ingestor.status().runs == 1
    finally:
        held.close()  # the run dies: its lock goes with its connection
    assert ingestor.status().runs == 0
