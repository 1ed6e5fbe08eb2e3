"""A lease is one statement: it jumps past other holders' leases, stops short of the next one, gives a
holder its own lease back first, frees a dead holder's, and costs one round trip."""

from __future__ import annotations

import time

from embedlib import Ingestor
from embedlib.db.session import connect
from embedlib.source.sharing import Sharing
from embedlib.source.tables import inspect_source
from embedlib.store.provenance import served_target
from embedlib.testing import HashEncoder


def holder(dsn, table):  # type: ignore[no-untyped-def]
    """A holder on ``table``'s target, with a connection of its own (its holder lock lives with it)."""
    conn = connect(dsn, autocommit=True)
    source = inspect_source(conn, table, "id", "text")
    target = served_target(conn, source, None)
    assert target is not None
    sharing = Sharing()
    sharing.hold(conn)
    sharing.start(source, target, HashEncoder().name)
    return sharing, conn


def gone(conn, pid: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if cur.fetchone()[0] == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} did not end")


def test_leases_jump_past_other_holders_stop_short_of_them_and_cost_one_round_trip(dsn, tables):
    table = tables.source([f"row {i}" for i in range(100)])  # ids 1..100
    Ingestor(dsn, table=table, model=HashEncoder(), executor="serial").run(limit=1)  # makes the target
    (a, a_conn), (b, b_conn), (c, c_conn) = holder(dsn, table), holder(dsn, table), holder(dsn, table)
    try:
        assert a.take(a_conn, None, 10) == ("1", "10")
        assert not a.others_seen
        trips = b_conn.round_trips
        assert b.take(b_conn, None, 10) == ("11", "20")  # past a's lease
        assert b_conn.round_trips - trips == 1
        assert b.others_seen
        assert a.take(a_conn, "10", 30) == ("21", "50")  # past b's
        assert b.take(b_conn, "20", 100) == ("51", "100")  # past a's second
        assert a.take(a_conn, "50", 10) is None  # the rest is b's
        a_pid = a_conn.get_backend_pid()
        a_conn.close()  # a dies: its leases are free again, once its backend has gone
        gone(b_conn, a_pid)
        assert c.take(c_conn, None, 100) == ("1", "10")  # short of b's first lease
        assert c.take(c_conn, "10", 100) == ("21", "50")  # past it, short of b's second
        assert c.take(c_conn, None, 5) == ("1", "10")  # a lease of its own comes first (a retried take)
    finally:
        for conn in (a_conn, b_conn, c_conn):
            conn.close()
