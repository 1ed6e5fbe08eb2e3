"""Taking a lease in one round trip: the statements ``sharing.Sharing.take`` sends as one.

From a distant database every round trip costs as much as a small batch's
write, and a lease used to be nine (BEGIN, lock, clean up, look, walk past
other holders' leases, size the window, insert, COMMIT). Sent as one
multi-statement string on an autocommit connection, the statements run as
one implicit transaction (so the transaction-scoped advisory lock that
serialises lease-taking on the target is held to the end) and cost one
round trip; psycopg2 returns the last statement's rows.

The last statement walks the source's ids with a recursive CTE: from the
first id after ``%(after)s``, it jumps past every range another live holder
of the same model has leased (to that lease's end) until it meets an id no
one holds; the window starts there and ends ``%(size)s`` ids later, or just
before the next lease of another holder. A lease of this holder's own past
``%(after)s`` (taken, but its connection was lost before the window was
read) is the answer instead, and no new one is taken.
"""

from __future__ import annotations

from psycopg2 import sql

from embedlib.db.queue import LIVE_HOLDERS
from embedlib.db.relations import SourceTable

# The next source id after the walk's last step (``{after}``), the end of another holder's
# lease covering it, and the start of the next lease of another holder after it.
_STEP = """
    SELECT n.id, c.last_id, x.first_id FROM {from_walk}
    (SELECT s.{id} AS id FROM {source} s {after} ORDER BY s.{id} LIMIT 1) n
    LEFT JOIN LATERAL (SELECT l.last_id FROM {leases} l WHERE {others} AND l.first_id <= n.id
                       AND n.id <= l.last_id ORDER BY l.last_id DESC LIMIT 1) c ON TRUE
    LEFT JOIN LATERAL (SELECT l.first_id FROM {leases} l WHERE {others} AND l.first_id > n.id
                       ORDER BY l.first_id LIMIT 1) x ON TRUE
"""

_TAKE = (
    "SELECT pg_advisory_xact_lock(%(space)s, hashtext(%(target)s)); "
    "DELETE FROM {leases} WHERE holder NOT IN ({live}); "  # the leases of holders that died
    "WITH RECURSIVE walk (n, covered_until, stop) AS ("
    + _STEP
    + " UNION ALL "
    + _STEP.replace("{from_walk}", "walk w CROSS JOIN LATERAL").replace("{after}", "WHERE s.{id} > w.covered_until")
    + " WHERE w.covered_until IS NOT NULL), "
    "found AS (SELECT n AS first_id, stop FROM walk WHERE covered_until IS NULL LIMIT 1), "
    "span AS (SELECT f.first_id, (SELECT w.id FROM (SELECT s.{id} AS id FROM {source} s "
    "    WHERE s.{id} >= f.first_id AND (f.stop IS NULL OR s.{id} < f.stop) ORDER BY s.{id} LIMIT %(size)s) w "
    "    ORDER BY w.id DESC LIMIT 1) AS last_id FROM found f), "
    "mine AS (SELECT first_id, last_id FROM {leases} WHERE holder = %(me)s {mine_after} ORDER BY first_id LIMIT 1), "
    "taken AS (INSERT INTO {leases} (holder, model, first_id, last_id) "
    "    SELECT %(me)s, %(model)s, first_id, last_id FROM span WHERE NOT EXISTS (SELECT FROM mine) "
    "    RETURNING first_id, last_id) "
    "SELECT first_id::text, last_id::text, "
    "    EXISTS (SELECT FROM {leases} l WHERE l.holder <> %(me)s AND l.model = %(model)s) "
    "FROM (SELECT * FROM mine UNION ALL SELECT * FROM taken) chosen"
)


def take_statement(source: SourceTable, leases: sql.Composable, *, bounded: bool) -> sql.Composed:
    """The lease-taking statements for ``source`` and its target's ``leases`` table; ``bounded``:
    after ``%(after)s`` (else from the source's first id). Parameters: ``space`` and ``target``
    (the advisory lock), ``me``, ``model``, ``size``, and ``after`` where bounded. Answers
    ``(first id, last id, another holder of the model has leases)``, or no row when no window is left."""
    id_type = sql.SQL(source.id_type)  # format_type: quoted already
    after = sql.SQL("WHERE s.{id} > CAST(%(after)s AS {id_type})" if bounded else "")
    mine_after = sql.SQL("AND first_id > CAST(%(after)s AS {id_type})" if bounded else "")
    parts = {
        "id": sql.Identifier(source.id_column),
        "source": source.ident,
        "leases": leases,
        "id_type": id_type,
    }
    return sql.SQL(_TAKE).format(
        from_walk=sql.SQL(""),
        after=after.format(**parts),
        mine_after=mine_after.format(**parts),
        others=sql.SQL("l.holder <> %(me)s AND l.model = %(model)s"),
        live=LIVE_HOLDERS,
        **parts,
    )
