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

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from embedlib.db.session import Connection, fetch_all, transaction

if TYPE_CHECKING:
    from embedlib.db.relations import Relation

Cursor = psycopg2.extensions.cursor

# The error of a queue dropped under a run (``embedlib untrack``): it has no entries for the run.
_GONE = psycopg2.errors.UndefinedTable

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

    def claim(self, conn: Connection, holder: int, size: int, up_to_seq: int | None = None) -> dict[str, int]:
        """Hold up to ``size`` entries no live run holds (queued by ``up_to_seq``, if given), lowest
        ids first: id -> seq. None if the queue is gone (untracked under the run)."""
        statement = sql.SQL(
            "WITH free AS (SELECT id FROM {queue} WHERE (holder IS NULL OR holder NOT IN ({live})) "
            "AND seq <= coalesce(%(up_to)s, seq) ORDER BY id LIMIT %(size)s FOR UPDATE SKIP LOCKED) "
            "UPDATE {queue} q SET holder = %(me)s FROM free WHERE q.id = free.id RETURNING q.id::text, q.seq"
        ).format(queue=self.ident, live=LIVE_HOLDERS)
        parameters = {"size": size, "me": holder, "up_to": up_to_seq}
        with contextlib.suppress(_GONE), transaction(conn):
            return dict(fetch_all(conn, statement, parameters))
        return {}

    def last_seq(self, conn: Connection) -> int | None:
        """The newest entry's seq (None: an empty queue); a plain run goes no further, so that a
        table written to all the time does not keep it running."""
        with contextlib.suppress(_GONE):
            return fetch_all(conn, sql.SQL("SELECT max(seq) FROM {}").format(self.ident))[0][0]
        return None

    def settle(self, cur: Cursor, holder: int, ids: Sequence[str], seqs: Sequence[int]) -> list[str]:
        """In the caller's transaction, before it writes the rows ``ids``: remove their entries
        ``(id, seq)``, and return the ids whose entry it removed: only those may be written. The
        others changed again since they were read (a new seq, or a change not committed yet), and
        are given back for a later claim to read their new text; or their entries are gone (a
        TRUNCATE, a retried write whose first commit went through)."""
        ids = list(ids)
        parameters = {"ids": ids, "seqs": list(seqs), "me": holder}
        cur.execute(
            sql.SQL(
                "DELETE FROM {queue} q WHERE (q.id, q.seq) IN (SELECT x.id, x.seq FROM {queue} x "
                "JOIN unnest(CAST(%(ids)s AS {id_type}[]), %(seqs)s::int8[]) AS d(id, seq) "
                "ON x.id = d.id AND x.seq = d.seq FOR UPDATE OF x SKIP LOCKED) RETURNING q.id::text"
            ).format(queue=self.ident, id_type=sql.SQL(self.id_type)),
            parameters,
        )
        settled = [row_id for (row_id,) in cur.fetchall()]
        if len(settled) < len(ids):
            cur.execute(
                sql.SQL(
                    "UPDATE {queue} SET holder = NULL WHERE id IN (SELECT id FROM {queue} WHERE holder = %(me)s "
                    "AND id = ANY (CAST(%(ids)s AS {id_type}[])) FOR UPDATE SKIP LOCKED)"
                ).format(queue=self.ident, id_type=sql.SQL(self.id_type)),
                parameters,
            )
        return settled

    def add(self, cur: Cursor, ids: Sequence[str]) -> None:
        """In the caller's transaction: queue ``ids`` that have no entry (rows a full pass failed
        on: the queue is how a tracked table's runs find them to try again)."""
        cur.execute(
            sql.SQL(
                "INSERT INTO {queue} (id) SELECT DISTINCT unnest(CAST(%s AS {id_type}[])) ON CONFLICT (id) DO NOTHING"
            ).format(queue=self.ident, id_type=sql.SQL(self.id_type)),
            (list(ids),),
        )

    def release(self, conn: Connection, holder: int) -> None:
        """Give back every entry ``holder`` still holds (rows that failed, or a run that stopped);
        one being queued again now is left: its holder's end frees it anyway."""
        statement = sql.SQL(
            "UPDATE {queue} SET holder = NULL WHERE id IN (SELECT id FROM {queue} WHERE holder = %s "
            "FOR UPDATE SKIP LOCKED)"
        ).format(queue=self.ident)
        with contextlib.suppress(_GONE), transaction(conn), conn.cursor() as cur:
            cur.execute(statement, (holder,))

    def depth(self, conn: Connection) -> tuple[int, float | None]:
        """Entries waiting, and the age in seconds of the oldest (None: none)."""
        query = sql.SQL("SELECT count(*), extract(epoch FROM clock_timestamp() - min(queued_at)) FROM {}").format(
            self.ident
        )
        count, age = fetch_all(conn, query)[0]
        return int(count), None if age is None else float(age)
