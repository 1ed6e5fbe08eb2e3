"""Change capture: triggers on a source that queue the ids of the rows that change (``db.queue``).

``track`` installs, beside the target, the queue ``<stem>_queue`` and one
function ``<stem>_track()``, and on the source four statement-level
triggers calling it: after INSERT, UPDATE and DELETE (each reading the
statement's transition table: one INSERT into the queue per statement, not
per row) and after TRUNCATE. An UPDATE queues only rows whose id or text
changed. A TRUNCATE empties the queue and asks for a *resync*: a full pass
over the source, which removes every vector of a row that is gone. ``track``
asks for one too, so that changes made before it are not missed.

The function is SECURITY DEFINER (whoever writes to the source needs no
rights on the queue) with a fixed ``search_path``, and every name in it is
schema-qualified. It never fails the statement that fired it: if queueing
fails (a column renamed under it, say) it asks for a resync and warns.

What the target's ``meta`` table holds for it: ``tracked`` (the model whose
runs read the queue, as JSON) and ``resync`` (set while a full pass is due).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from psycopg2 import sql

from embedlib.db.queue import ChangeQueue, Cursor
from embedlib.db.relations import Relation, SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all, qualified, transaction
from embedlib.errors import SchemaError
from embedlib.store.schema import side_table_stem, target_name

_EVENTS = {
    "insert": "AFTER INSERT ON {source} REFERENCING NEW TABLE AS embedlib_new",
    "update": "AFTER UPDATE ON {source} REFERENCING OLD TABLE AS embedlib_old NEW TABLE AS embedlib_new",
    "delete": "AFTER DELETE ON {source} REFERENCING OLD TABLE AS embedlib_old",
    "truncate": "AFTER TRUNCATE ON {source}",
}

_QUEUE = """
    CREATE TABLE IF NOT EXISTS {queue} (
        id {id_type} PRIMARY KEY,
        seq bigserial NOT NULL,
        holder int4,
        queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
"""

_REQUEUE = "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, queued_at = EXCLUDED.queued_at"
_RESYNC = (
    "INSERT INTO {meta} (key, value) VALUES ('resync', clock_timestamp()::text) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)

# Texts are compared as text: a json column, say, has no equality of its own.
_BODY = (
    """
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO {queue} (id) SELECT n.{id} FROM embedlib_new n WHERE n.{id} IS NOT NULL """
    + _REQUEUE
    + """;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO {queue} (id)
            SELECT n.{id} FROM embedlib_new n LEFT JOIN embedlib_old o ON o.{id} = n.{id}
            WHERE n.{id} IS NOT NULL
                AND (o.{id} IS NULL OR CAST(o.{text} AS text) IS DISTINCT FROM CAST(n.{text} AS text))
            UNION
            SELECT o.{id} FROM embedlib_old o LEFT JOIN embedlib_new n ON n.{id} = o.{id}
            WHERE o.{id} IS NOT NULL AND n.{id} IS NULL """
    + _REQUEUE
    + """;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO {queue} (id) SELECT o.{id} FROM embedlib_old o WHERE o.{id} IS NOT NULL """
    + _REQUEUE
    + """;
        ELSE
            DELETE FROM {queue};
            """
    + _RESYNC
    + """;
        END IF;
        PERFORM pg_catalog.pg_notify({channel}, '');
    EXCEPTION WHEN OTHERS THEN
        -- The application's write goes through whatever happens here: the next run reads the whole table.
        """
    + _RESYNC
    + """;
        RAISE WARNING 'embedlib could not queue the changes to %: % (the next run reads the whole table)',
            TG_TABLE_NAME, SQLERRM;
    END;
    RETURN NULL;
END
"""
)


@dataclass(frozen=True)
class Tracking:
    """A tracked target: whose runs read its queue, and whether a full pass is due first."""

    model: str  # the model name (provenance.model_key) whose runs read the queue
    resync: str | None  # set while a full pass over the source is due (after track or a TRUNCATE)


def channel(conn: Connection, source: SourceTable, target: str | None) -> str:
    """The NOTIFY channel on which tracking ``source`` into ``target`` (a --target, or None) signals
    its changes: known before the table is tracked, or its target made."""
    schema, name = target_name(source, target)
    queue = Relation(schema, f"{side_table_stem(conn, schema, name)}_queue")
    return ChangeQueue(queue, source.id_type).channel


def tracking(conn: Connection, source: SourceTable, target: TargetTable) -> Tracking | None:
    """The target's tracking, or None if it is not tracked (or its triggers are gone)."""
    if not target.meta.exists(conn) or not target.queue.exists(conn):
        return None
    rows = dict(
        fetch_all(
            conn, sql.SQL("SELECT key, value FROM {} WHERE key IN ('tracked', 'resync')").format(target.meta.ident)
        )
    )
    if "tracked" not in rows or _installed_triggers(conn, source, target) < len(_EVENTS):
        return None
    return Tracking(json.loads(rows["tracked"])["model"], rows.get("resync"))


def track(conn: Connection, source: SourceTable, target: TargetTable, model: str) -> bool:
    """Install (or re-install) change capture for ``source`` into ``target`` for runs of
    ``model``; True if it was not fully in place before (a full pass is then due). Commits."""
    check_privileges(conn, source, target.schema)
    parts = _parts(conn, source, target)
    with transaction(conn), conn.cursor() as cur:
        _lock(cur, target)
        complete = _installed_triggers(conn, source, target) == len(_EVENTS) and target.queue.exists(conn)
        cur.execute(sql.SQL(_QUEUE).format(queue=parts["queue"], id_type=sql.SQL(target.id_type)))
        body = sql.SQL(_BODY).format(**parts).as_string(conn)
        cur.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS {body}"
            ).format(function=parts["function"], body=sql.Literal(body))
        )
        for event, clause in _EVENTS.items():
            name = sql.Identifier(_trigger_name(target, event))
            cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, source.ident))
            cur.execute(
                sql.SQL("CREATE TRIGGER {name} " + clause + " FOR EACH STATEMENT EXECUTE FUNCTION {function}()").format(
                    name=name, source=source.ident, function=parts["function"]
                )
            )
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (key, value) VALUES ('tracked', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).format(target.meta.ident),
            (json.dumps({"model": model}),),
        )
        if not complete:
            cur.execute(sql.SQL(_RESYNC).format(meta=target.meta.ident))
    return not complete


def untrack(conn: Connection, source: SourceTable, target: TargetTable) -> bool:
    """Remove change capture: the triggers, the function, the queue, and what ``meta`` held of it.
    True if there was any of it. Commits."""
    function = _function_name(target)
    with transaction(conn), conn.cursor() as cur:
        _lock(cur, target)
        found = _installed_triggers(conn, source, target) > 0 or target.queue.exists(conn)
        for event in _EVENTS:
            cur.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(_trigger_name(target, event)), source.ident
                )
            )
        cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(qualified(target.schema, function)))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target.queue.ident))
        if target.meta.exists(conn):
            cur.execute(sql.SQL("DELETE FROM {} WHERE key IN ('tracked', 'resync')").format(target.meta.ident))
            found = found or cur.rowcount > 0
    return found


def synced(conn: Connection, target: TargetTable, marker: str | None, model: str) -> None:
    """A full pass by ``model``'s run is done: its runs read the queue from now on, and the resync
    asked for as ``marker`` is done (unless a TRUNCATE asked again since). Commits."""
    with transaction(conn), conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET value = %s WHERE key = 'tracked'").format(target.meta.ident),
            (json.dumps({"model": model}),),
        )
        cur.execute(sql.SQL("DELETE FROM {} WHERE key = 'resync' AND value = %s").format(target.meta.ident), (marker,))


def check_privileges(conn: Connection, source: SourceTable, schema: str) -> None:
    """Refuse, in one line naming what is missing, a role that cannot install the triggers on
    ``source`` and their queue in ``schema`` (the target's)."""
    kind, may_trigger, may_create, role = fetch_all(
        conn,
        "SELECT relkind::text, has_table_privilege(%s::oid, 'TRIGGER'), has_schema_privilege(%s, 'CREATE'), "
        "current_user FROM pg_class WHERE oid = %s::oid",
        (source.oid, schema, source.oid),
    )[0]
    if kind not in ("r", "p"):
        raise SchemaError(f"{source.label!r} is not a table: only a table's changes can be tracked")
    missing = [
        *([f"TRIGGER on {source.label}"] if not may_trigger else []),
        *([f"CREATE on schema {schema}"] if not may_create else []),
    ]
    if missing:
        raise SchemaError(
            f"cannot track {source.label}: role {role} lacks {' and '.join(missing)} "
            "(ask the owner to grant them, or run without tracking: --follow then polls)"
        )


def _installed_triggers(conn: Connection, source: SourceTable, target: TargetTable) -> int:
    """How many of the target's triggers are on the source and enabled."""
    query = (
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::oid AND tgname = ANY (%s) AND tgenabled <> 'D' "
        "AND tgfoid = to_regprocedure(%s)"
    )
    names = [_trigger_name(target, event) for event in _EVENTS]
    function = qualified(target.schema, _function_name(target)).as_string(conn) + "()"
    return int(fetch_all(conn, query, (source.oid, names, function))[0][0])


def _parts(conn: Connection, source: SourceTable, target: TargetTable) -> dict[str, sql.Composable]:
    return {
        "queue": target.queue.ident,
        "meta": target.meta.ident,
        "function": qualified(target.schema, _function_name(target)),
        "id": sql.Identifier(source.id_column),
        "text": sql.Identifier(source.text_column),
        "channel": sql.Literal(target.queue.channel),
    }


def _function_name(target: TargetTable) -> str:
    return f"{target.stem}_track"  # no longer than <stem>_errors, which is checked


def _trigger_name(target: TargetTable, event: str) -> str:
    """Short whatever the target's name, and distinct per target: a source may feed several."""
    return f"embedlib_{hashlib.md5(target.label.encode('utf-8')).hexdigest()[:12]}_{event}"


def _lock(cur: Cursor, target: TargetTable) -> None:
    """Serialise track and untrack of one target."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"embedlib-track:{target.label}",))
