"""Sharing one table between ingestors: leases on id ranges, claims on texts.

Any number of ``embedlib ingest`` runs, on one machine or many, can work on
one table at once with nothing but PostgreSQL between them:

- Each run is a *holder*: it holds a session advisory lock on a random key
  for as long as it lives. A holder is alive exactly while that lock is
  held, so when its process dies (even by SIGKILL) or its server restarts,
  PostgreSQL drops the lock at once and the holder's leases and claims
  are free again: no timeouts to wait out, no heartbeats.
- A run reads the source in windows, and *leases* each window's id range
  before reading it: the next ids after where it is, stopping short of
  ranges leased by other live holders and jumping past them. So no two runs
  read the same rows, and each row is written by one run.
- Rows with the same text can sit in ranges leased by different runs. A
  run *claims* a duplicated text before it encodes it; a text claimed by
  another live run is deferred, and a later pass reuses the vector that run
  stores. Texts held by one row only need no claim.

The lease and claim tables are UNLOGGED (no WAL, emptied after a server
crash, when every holder is dead anyway) and hold rows only while their
runs do.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from psycopg2 import sql

from embedlib.db.queue import HOLDERS, LIVE_HOLDERS
from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all, one_statement
from embedlib.source.leases import take_statement

TARGETS = 0x656D63  # advisory lock space serialising lease-taking on one target
RESYNCS = 0x656D64  # advisory lock space of the run making a tracked target's full pass


class Sharing:
    """This run's place among the ingestors sharing a target: its holder lock, its leases on id
    ranges and its claims on texts, and their release. The reader leases through it, the planner
    claims through it, and the writers give up the claims of texts that failed (``release_texts``).

    Made before the run knows its target, since every connection of the run
    holds the lock (``hold``, a Session's on_connect); ``start`` then points
    it at the target and the model.
    """

    def __init__(self) -> None:
        self.key = 1 + secrets.randbelow(2**31 - 2)
        self.others_seen = False  # has another live holder leased part of this target during the run

    def hold(self, conn: Connection) -> None:
        """Become this holder on ``conn`` (a Session's on_connect: after a reconnect, again).

        Waits for the lock if a connection of this run that the server dropped
        has not let go of it yet.
        """
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '30s'")
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (HOLDERS, self.key))
            cur.execute("RESET lock_timeout")
        conn.commit()

    def start(self, source: SourceTable, target: TargetTable, model: str) -> None:
        """Share ``target`` with the other runs of ``model``: runs of different models share
        nothing, each embeds every row with its own model."""
        self.model = model
        self._leases = target.leases.ident
        self._claims = target.claims.ident
        self._target_label = target.label
        self._id_type = target.id_type
        # Taking a lease: one round trip (see ``leases``), from the first id or after one.
        self._take = [take_statement(source, self._leases, bounded=bounded) for bounded in (False, True)]

    def take(self, conn: Connection, after: str | None, size: int) -> tuple[str, str] | None:
        """Lease the next window of up to ``size`` source ids after ``after`` that no other live
        holder has leased: (first id, last id), or None when there is none left."""
        parameters = {
            "space": TARGETS,
            "target": self._target_label,
            "me": self.key,
            "model": self.model,
            "after": after,
            "size": size,
        }
        with one_statement(conn), conn.cursor() as cur:
            cur.execute(self._take[after is not None], parameters)
            row = cur.fetchone()
        if row is None:
            return None
        self.others_seen = self.others_seen or bool(row[2])
        return row[0], row[1]

    def claim_texts(self, conn: Connection, text_hashes: Sequence[str]) -> set[str]:
        """Claim texts to encode, by hash; returns those now this holder's (new, already its own,
        or taken over from a holder that died). The rest are another live holder's to encode."""
        if not text_hashes:
            return set()
        statement = sql.SQL(
            "INSERT INTO {claims} AS c (model, text_hash, holder) SELECT %(model)s, unnest(%(hashes)s::text[]), %(me)s "
            "ON CONFLICT (model, text_hash) DO UPDATE SET holder = EXCLUDED.holder "
            "WHERE c.holder = EXCLUDED.holder OR c.holder NOT IN ({live}) RETURNING text_hash"
        ).format(claims=self._claims, live=LIVE_HOLDERS)
        # Sorted: runs claiming overlapping texts then take their row locks in one order,
        # so they wait for each other instead of deadlocking.
        hashes = sorted(set(text_hashes))
        rows = fetch_all(conn, statement, {"hashes": hashes, "me": self.key, "model": self.model})
        return {text_hash for (text_hash,) in rows}

    def release_texts(self, conn: Connection, text_hashes: Sequence[str]) -> None:
        """Give up claims on texts that failed: another holder's rows with the same text may try them."""
        statement = sql.SQL("DELETE FROM {} WHERE holder = %s AND text_hash = ANY (%s::text[])").format(self._claims)
        with conn.cursor() as cur:
            cur.execute(statement, (self.key, list(text_hashes)))

    def lock_resync(self, conn: Connection) -> bool:
        """Take the right to make a tracked target's full pass, for as long as ``conn`` lives
        (the run's reading connection); False if another live run has it."""
        rows = fetch_all(conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (RESYNCS, self._target_label))
        return bool(rows[0][0])

    def release(self, conn: Connection) -> None:
        """Drop this holder's leases and claims, and those of holders that died (its advisory
        lock goes with its connection)."""
        delete = sql.SQL("DELETE FROM {} WHERE holder = %(me)s OR holder NOT IN ({})")
        statements = sql.SQL("; ").join(delete.format(table, LIVE_HOLDERS) for table in (self._leases, self._claims))
        with one_statement(conn), conn.cursor() as cur:
            cur.execute(statements, {"me": self.key})


def live_holders(conn: Connection, target: TargetTable) -> set[int]:
    """The runs alive now that hold leases on ``target``, or entries of its change queue."""
    tables = [target.leases.ident] if target.leases.exists(conn) else []
    if target.queue.exists(conn):
        tables.append(target.queue.ident)
    if not tables:
        return set()
    holders = sql.SQL(" UNION ").join(sql.SQL("SELECT holder FROM {}").format(table) for table in tables)
    query = sql.SQL("SELECT DISTINCT holder FROM ({}) h WHERE holder IN ({})").format(holders, LIVE_HOLDERS)
    return {int(holder) for (holder,) in fetch_all(conn, query)}
