"""Change capture: triggers on a source that queue the ids of the rows that change (``db.queue``).

``track`` installs, beside the target, the queue ``<stem>_queue`` and one
function ``<stem>_track()``, and on the source four statement-level
triggers calling it (their SQL is in ``triggers``): after INSERT, UPDATE and
DELETE, and after TRUNCATE. An UPDATE queues only rows whose id or text
changed. A TRUNCATE empties the queue and asks for a *resync*: a full pass
over the source, which removes every vector of a row that is gone. ``track``
asks for one too, so that changes made before it are not missed; so does a
run of another model (it rewrites vectors the queue knows nothing of), and
a run that finds the triggers missing or disabled (changes went unseen).

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
from embedlib.store.triggers import BODY, EVENTS, QUEUE, RESYNC


@dataclass(frozen=True)
class Tracking:
    """A tracked target: whose runs read its queue, and whether a full pass is due first."""

    model: str  # the model name (provenance.model_key) whose runs read the queue
    resync: str | None  # set while a full pass over the source is due (after track or a TRUNCATE)
    intact: bool = True  # False: some of its triggers are gone or disabled, so changes go unseen


def channel(conn: Connection, source: SourceTable, target: str | None) -> str:
    """The NOTIFY channel on which tracking ``source`` into ``target`` (a --target, or None) signals
    its changes: known before the table is tracked, or its target made."""
    schema, name = target_name(source, target)
    queue = Relation(schema, f"{side_table_stem(conn, schema, name)}_queue")
    return ChangeQueue(queue, source.id_type).channel


def tracking(conn: Connection, source: SourceTable, target: TargetTable) -> Tracking | None:
    """The target's tracking, or None if it is not tracked."""
    if not target.meta.exists(conn) or not target.queue.exists(conn):
        return None
    query = sql.SQL("SELECT key, value FROM {} WHERE key IN ('tracked', 'resync')").format(target.meta.ident)
    rows = dict(fetch_all(conn, query))
    if "tracked" not in rows:
        return None
    intact = _installed_triggers(conn, source, target) == len(EVENTS)
    return Tracking(json.loads(rows["tracked"])["model"], rows.get("resync"), intact)


def request_resync(conn: Connection, target: TargetTable) -> None:
    """Ask for a full pass before the queue is read again: changes went unseen (triggers disabled
    for a while), or another model's run rewrote vectors. In the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(RESYNC).format(meta=target.meta.ident))


def track(conn: Connection, source: SourceTable, target: TargetTable, model: str) -> bool:
    """Install (or re-install) change capture for ``source`` into ``target`` for runs of
    ``model``; True if it was not fully in place before (a full pass is then due). Commits."""
    check_privileges(conn, source, target.schema)
    parts = _parts(conn, source, target)
    with transaction(conn), conn.cursor() as cur:
        _lock(cur, target)
        before = tracking(conn, source, target)
        complete = before is not None and before.intact and before.model == model
        cur.execute(sql.SQL(QUEUE).format(queue=parts["queue"], id_type=sql.SQL(target.id_type)))
        body = sql.SQL(BODY).format(**parts).as_string(conn)
        cur.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS {body}"
            ).format(function=parts["function"], body=sql.Literal(body))
        )
        # Trigger functions run whatever EXECUTE says; this keeps others from attaching it elsewhere.
        cur.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {}() FROM PUBLIC").format(parts["function"]))
        present = _trigger_names(conn, source)
        for event, clause in EVENTS.items():
            name = _trigger_name(target, event)
            if name in present:  # dropping one needs the table's owner, whom tracking does not need
                continue
            cur.execute(
                sql.SQL("CREATE TRIGGER {name} " + clause + " FOR EACH STATEMENT EXECUTE FUNCTION {function}()").format(
                    name=sql.Identifier(name), source=source.ident, function=parts["function"]
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
            cur.execute(sql.SQL(RESYNC).format(meta=target.meta.ident))
    return not complete


def untrack(conn: Connection, source: SourceTable, target: TargetTable) -> bool:
    """Remove change capture: the triggers, the function, the queue, and what ``meta`` held of it.
    True if there was any of it. Commits."""
    function = _function_name(target)
    with transaction(conn), conn.cursor() as cur:
        _lock(cur, target)
        found = _installed_triggers(conn, source, target) > 0 or target.queue.exists(conn)
        for event in EVENTS:
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


def synced(conn: Connection, target: TargetTable, marker: str) -> None:
    """The full pass asked for as ``marker`` is done: runs read the queue from now on (unless a
    TRUNCATE, or another model's run, asked again since). Commits."""
    with transaction(conn), conn.cursor() as cur:
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
    if kind == "p":  # a statement naming a partition would not fire the parent's triggers
        raise SchemaError(f"{source.label!r} is partitioned: tracking it is not supported; run without tracking")
    if kind != "r":
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


def _trigger_names(conn: Connection, source: SourceTable) -> set[str]:
    return {name for (name,) in fetch_all(conn, "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::oid", (source.oid,))}


def _installed_triggers(conn: Connection, source: SourceTable, target: TargetTable) -> int:
    """How many of the target's triggers are on the source and fire (enabled, and not only for replicas)."""
    query = (
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::oid AND tgname = ANY (%s) AND tgenabled IN ('O', 'A') "
        "AND tgfoid = to_regprocedure(%s)"
    )
    names = [_trigger_name(target, event) for event in EVENTS]
    function = qualified(target.schema, _function_name(target)).as_string(conn) + "()"
    return int(fetch_all(conn, query, (source.oid, names, function))[0][0])


def _parts(conn: Connection, source: SourceTable, target: TargetTable) -> dict[str, sql.Composable]:
    return {
        "queue": target.queue.ident,
        "meta": target.meta.ident,
        "function": qualified(target.schema, _function_name(target)),
        "id": sql.Identifier(source.id_column),
        "old_text": source.text_sql("o"),
        "new_text": source.text_sql("n"),
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
