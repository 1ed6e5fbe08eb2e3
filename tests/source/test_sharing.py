"""Runs killed at any moment, and runs sharing one table: every row embedded exactly once.

Real processes (``embedlib ingest``), the real model, a real PostgreSQL.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import numpy as np
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.db.session import connect
from embedlib.source.sharing import HOLDERS
from embedlib.testing import HashEncoder
from tests.processes import (
    assert_every_row_matches_its_text,
    assert_shared_exactly_once,
    half_duplicated,
    side_rows,
    start_cli,
    stored_count,
    wait_for_rows,
)


def test_four_runs_started_together_share_the_work(conn, dsn, tables, sample_texts):
    texts = half_duplicated(sample_texts, 1600, seed=4)
    table = tables.source(texts)
    runs = [start_cli("ingest", table, "25", "--window-size", "100", "--json", dsn=dsn) for _ in range(4)]
    reports = []
    for proc in runs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    summary = [(r["rows"], r["encoded"]) for r in reports]
    print(f"\n4 runs on {len(texts)} rows, {len(set(texts))} distinct texts: (rows, encoded) = {summary}")
    assert_shared_exactly_once(conn, tables, table, texts, summary)


def test_runs_killed_at_random_moments_then_one_run_finishes_exactly_as_a_clean_run(conn, dsn, tables, sample_texts):
    texts = half_duplicated(sample_texts, 3600, seed=20)
    table, clean = tables.source(texts), tables.source(texts)
    done = start_cli("ingest", clean, "--json", dsn=dsn)
    assert done.wait(timeout=600) == 0

    # Half the runs die at a random moment of their first 5 s (starting up, loading
    # the model, leasing, maybe writing), half while writing: within 0.3 s of their first commit.
    chance = random.Random(20)
    stored_after_kill = [0]
    for kill in range(20):
        proc = start_cli("ingest", table, "50", "--window-size", "300", dsn=dsn)
        if kill % 2:
            wait_for_rows(conn, table, proc, stored_after_kill[-1] + 1)
            time.sleep(chance.uniform(0, 0.3))
        else:
            time.sleep(chance.uniform(0.2, 5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stored_after_kill.append(stored_count(conn, table))
    with conn.cursor() as cur:  # texts of rows not stored whose vector no other row has either
        cur.execute(
            sql.SQL(
                "SELECT count(DISTINCT md5(s.text)) FROM {source} s "
                "WHERE NOT EXISTS (SELECT FROM {target} t WHERE t.id = s.id) "
                "AND NOT EXISTS (SELECT FROM {target} t WHERE t.text_hash = md5(s.text))"
            ).format(source=sql.Identifier(table), target=sql.Identifier(f"{table}_embeddings"))
        )
        never_encoded = int(cur.fetchone()[0])
    proc = start_cli("ingest", table, "50", "--json", dsn=dsn)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    report = json.loads(out)
    print(f"\nrows stored after each of 20 SIGKILLs: {stored_after_kill[1:]}; then: {out.strip()}")
    assert stored_after_kill[-1] < len(texts), "the killed runs finished the table: kill them sooner"
    assert report["encoded"] == never_encoded  # what was committed is not encoded again
    assert report["rows"] == len(texts) - stored_after_kill[-1]

    assert_every_row_matches_its_text(tables, table, texts)
    resumed, reference = tables.embeddings(table), tables.embeddings(clean)
    assert resumed.keys() == reference.keys()
    worst = max(float(np.abs(resumed[i] - reference[i]).max()) for i in reference)
    assert worst < 1e-5, worst  # batches of other texts pad differently: float noise, no more
    columns = "id, text_hash, char_length, token_count, truncated, frequency, model"
    assert tables.rows(table, columns) == tables.rows(clean, columns)
    assert side_rows(conn, table) == {"errors": 0, "leases": 0, "claims": 0}


def test_spans_leased_by_a_live_run_are_skipped_by_runs_of_its_model_only(dsn, conn, tables):
    table = tables.source([f"row {i}" for i in range(1, 101)])
    x, y = HashEncoder(name="model-x"), HashEncoder(name="model-y")
    Ingestor(dsn, table=table, model=x).run(limit=1)  # makes the target and the tables beside it
    holder = 424242
    with conn.cursor() as cur:  # this connection plays a live run of model x that leased ids 40..60
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (HOLDERS, holder))
        cur.execute(
            sql.SQL("INSERT INTO {} (holder, model, first_id, last_id) VALUES (%s, 'model-x', 40, 60)").format(
                sql.Identifier(f"{table}_embedding_leases")
            ),
            (holder,),
        )
    assert Ingestor(dsn, table=table, model=x, window_size=10).run().rows == 99 - 21
    assert Ingestor(dsn, table=table, model=y, window_size=10).run().rows == 100  # not model x's run
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s, %s)", (HOLDERS, holder))  # the run dies
    assert Ingestor(dsn, table=table, model=x, window_size=10).run().rows == 100  # all again: y replaced x
    assert side_rows(conn, table)["leases"] == 0  # the dead run's lease went with it


def test_rows_deferred_for_another_run_are_read_again_before_they_are_written(dsn, conn, tables):
    table = tables.source(["shared text", "shared text", "a text of its own"])
    encoder = HashEncoder()
    Ingestor(dsn, table=table, model=encoder, executor="serial").run(limit=1)  # makes the target; row 1 stored
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(f"{table}_embeddings")))
    holder = 434343
    other = connect(dsn, autocommit=True)  # a live run that has claimed the shared text
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (HOLDERS, holder))
            cur.execute(
                sql.SQL("INSERT INTO {} (model, text_hash, holder) VALUES (%s, md5('shared text'), %s)").format(
                    sql.Identifier(f"{table}_embedding_claims")
                ),
                (encoder.name, holder),
            )
        reports: list[object] = []
        run = threading.Thread(target=lambda: reports.append(Ingestor(dsn, table=table, model=encoder).run()))
        run.start()
        deadline = time.monotonic() + 60
        while "3" not in tables.embeddings(table) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(tables.embeddings(table)) == {"3"}  # rows 1 and 2 wait for the other run
        with conn.cursor() as cur:  # row 2 goes while they wait; then the other run dies
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = 2").format(sql.Identifier(table)))
    finally:
        other.close()
    run.join(timeout=60)
    assert not run.is_alive()
    assert set(tables.embeddings(table)) == {"1", "3"}  # no vector for the row deleted meanwhile
