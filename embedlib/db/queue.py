"""The change queue of a tracked table: the ids of source rows changed since they were last embedded.

Triggers on the source (``store.tracking``) add an entry per changed id, or
give an entry already there a new ``seq``. Runs *hold* entries (``holder``
is their ``sharing.Sharing`` key) while they work on them, so runs sharing
the table take different entries; an entry whose holder died is free again.
An entry leaves the queue only by its exact ``(id, seq)``, in the transaction
that stores (or removes) its row's vector: a row changed again meanwhile keeps
its entry, with the new seq, and is done again.

The triggers never change ``holder``: a run working on an entry that changes
under it keeps it, so no two runs ever write one row's vector at once (the
older text's vector could land last). Its write gives the entry back
(``dequeue``), and the next claim reads the newer text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg2.extensions
from psycopg2 import sql

from embedlib.db.session import Connection, fetch_all, transaction

if TYPE_CHECKING:
    from embedlib.db.relations import Relation

Cursor = psycopg2.extensions.cursor

# Runs hold a session advisory lock in this space, on their own key, for as long as they live
# (see source.sharing): the queue and the sharing tables both tell live holders by it.
HOLDERS = 0x656D62
LIVE_HOLDERS = sql.SQL(
    "SELECT objid::int8 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND classid = {} "
    "AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_catalog.pg_database "
    "WHERE datname = current_database())"
).format(sql.Literal(HOLDERS))


@dataclass(frozen=True)
class ChangeQueue:
    """The queue table (``<stem>_queue`` beside a target, see ``relations.TargetTable.queue``)."""

    table: Relation
    id_type: str  # the source id's type, as format_type prints it (quoted already)

    @property
    def ident(self) -> sql.Composed:
        return self.table.ident

    @property
    def label(self) -> str:
        return self.table.label

    def exists(self, conn: Connection) -> bool:
        return self.table.exists(conn)

    @property
    def channel(self) -> str:
        """The NOTIFY channel its triggers signal on: fixed by the queue's name, so a follower can
        listen before the table is tracked, and short enough for any name."""
        return "embedlib_" + hashlib.md5(self.label.encode("utf-8")).hexdigest()[:20]

    def claim(self, conn: Connection, holder: int, size: int) -> dict[str, int]:
        """Hold up to ``size`` entries no live run holds, lowest ids first: id -> seq."""
        statement = sql.SQL(
            "WITH free AS (SELECT id FROM {queue} WHERE holder IS NULL OR holder NOT IN ({live}) "
            "ORDER BY id LIMIT %(size)s FOR UPDATE SKIP LOCKED) "
            "UPDATE {queue} q SET holder = %(me)s FROM free WHERE q.id = free.id RETURNING q.id::text, q.seq"
        ).format(queue=self.ident, live=LIVE_HOLDERS)
        with transaction(conn):
            return dict(fetch_all(conn, statement, {"size": size, "me": holder}))

    def held(self, conn: Connection, holder: int, ids: Sequence[str]) -> dict[str, int]:
        """The entries among ``ids`` that ``holder`` holds, with their current seq: id -> seq."""
        statement = sql.SQL(
            "SELECT id::text, seq FROM {queue} WHERE holder = %s AND id = ANY (CAST(%s AS {id_type}[]))"
        ).format(queue=self.ident, id_type=sql.SQL(self.id_type))
        return dict(fetch_all(conn, statement, (holder, list(ids))))

    def dequeue(self, cur: Cursor, holder: int, ids: Sequence[str], seqs: Sequence[int]) -> None:
        """In the caller's transaction: remove the entries ``(id, seq)``, and give back those of
        ``ids`` that changed again since (a new seq), for a later claim to read their new text."""
        ids = list(ids)
        parameters = {"ids": ids, "seqs": list(seqs), "me": holder}
        cur.execute(
            sql.SQL(
                "DELETE FROM {queue} q USING unnest(CAST(%(ids)s AS {id_type}[]), %(seqs)s::int8[]) AS d(id, seq) "
                "WHERE q.id = d.id AND q.seq = d.seq"
            ).format(queue=self.ident, id_type=sql.SQL(self.id_type)),
            parameters,
        )
        if cur.rowcount < len(ids):
            cur.execute(
                sql.SQL(
                    "UPDATE {queue} SET holder = NULL WHERE holder = %(me)s AND id = ANY (CAST(%(ids)s AS {id_type}[]))"
                ).format(queue=self.ident, id_type=sql.SQL(self.id_type)),
                parameters,
            )

    def release(self, conn: Connection, holder: int) -> None:
        """Give back every entry ``holder`` still holds (rows that failed, or a run that stopped)."""
        with transaction(conn), conn.cursor() as cur:
            cur.execute(sql.SQL("UPDATE {} SET holder = NULL WHERE holder = %s").format(self.ident), (holder,))

    def depth(self, conn: Connection) -> tuple[int, float | None]:
        """Entries waiting, and the age in seconds of the oldest (None: none)."""
        query = sql.SQL("SELECT count(*), extract(epoch FROM clock_timestamp() - min(queued_at)) FROM {}").format(
            self.ident
        )
        count, age = fetch_all(conn, query)[0]
        return int(count), None if age is None else float(age)
