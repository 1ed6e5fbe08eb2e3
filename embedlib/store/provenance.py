"""What a target serves: the source (and columns) its rows are keyed by, and the model behind
each name in its ``model`` column. Kept in the ``<stem>_meta`` table beside the target.

A target serves one source through one id and one text column: another
source naming it would overwrite rows keyed by someone else's ids. A
model is what it is (``identity.model_identity``), whatever its label: two
models with one label are stored under two names.
"""

from __future__ import annotations

import hashlib
import json

from psycopg2 import sql

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all
from embedlib.encode.identity import ModelIdentity
from embedlib.errors import SchemaError
from embedlib.store.schema import existing_target


def served_target(conn: Connection, source: SourceTable, target: str | None) -> TargetTable | None:
    """``schema.existing_target``, refused if it serves another source (see ``check_owner``)."""
    table = existing_target(conn, source, target)
    if table is not None:
        check_owner(conn, table, source)
    return table


def _owner(source: SourceTable) -> str:
    return json.dumps([source.schema, source.name, source.id_column, source.text_label, source.oid])


def _recorded_owner(conn: Connection, target: TargetTable) -> str | None:
    """The target's record of the source it serves (``_owner``'s form), if it has one."""
    if not target.meta.exists(conn):
        return None
    rows = fetch_all(conn, sql.SQL("SELECT value FROM {} WHERE key = 'source'").format(target.meta.ident))
    return str(rows[0][0]) if rows else None


def check_owner(conn: Connection, target: TargetTable, source: SourceTable) -> None:
    """Refuse a target that serves another source, or other columns of this one: its rows are keyed
    by that source's ids, and writing this source's vectors would overwrite them.

    The source is known by name, or by the table itself (a renamed source
    keeps its target). A target with no record (made before targets kept
    one, or whose ``_meta`` was dropped) is taken only if its rows hold
    this source's texts: half of a sample must match.
    """
    recorded = _recorded_owner(conn, target)
    if recorded is None:
        _check_rows_match(conn, target, source)
        return
    schema, name, id_column, text_column, *rest = json.loads(recorded)
    same_table = (schema, name) == (source.schema, source.name) or (rest and rest[0] == source.oid)
    if same_table and (id_column, text_column) == (source.id_column, source.text_label):
        return
    raise SchemaError(
        f"target {target.label!r} holds the vectors of {schema}.{name} (id {id_column!r}, text {text_column!r}), "
        f"not of {source.label} (id {source.id_column!r}, text {source.text_label!r}); choose another --target"
    )


_SAMPLE = 100  # target rows compared with the source when the target has no record of it


def _check_rows_match(conn: Connection, target: TargetTable, source: SourceTable) -> None:
    query = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE md5({text}) = t.text_hash) "
        "FROM (SELECT id, text_hash FROM {target} LIMIT %s) t LEFT JOIN {source} s ON s.{id} = t.id"
    ).format(
        text=source.text_sql("s"),
        target=target.ident,
        source=source.ident,
        id=sql.Identifier(source.id_column),
    )
    sampled, matched = fetch_all(conn, query, (_SAMPLE,))[0]
    if 2 * matched < sampled:
        raise SchemaError(
            f"target {target.label!r} has no record of the source it serves, and its rows do not hold the texts "
            f"of {source.label} ({matched} of {sampled} sampled); choose another --target"
        )


def claim_target(conn: Connection, target: TargetTable, source: SourceTable) -> None:
    """Record that ``target`` serves ``source`` (``check_owner`` refused any other): its name now, if
    it was renamed, and the table's own identity, if an older record lacked it.

    Written only when it changes: a write locks the row until the caller
    commits, and runs starting together must not queue behind each other.
    """
    owner = _owner(source)
    if _recorded_owner(conn, target) == owner:
        return
    statement = sql.SQL(
        "INSERT INTO {} (key, value) VALUES ('source', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )
    with conn.cursor() as cur:
        cur.execute(statement.format(target.meta.ident), (owner,))


def model_key(conn: Connection, target: TargetTable, identity: ModelIdentity, *, create: bool = True) -> str | None:
    """The name stored in the target's ``model`` column for the model ``identity`` is.

    The model's label when no other model holds it in this target, else the
    label and the start of the identity's digest: two models typed the same
    way (``./m`` in two directories) never share vectors, and the name people
    read stays short. A target made before identities were recorded adopts
    its labels for the first model that uses them. ``create=False`` (search):
    None if the target knows no such model.
    """
    if not create and not target.meta.exists(conn):
        return identity.label  # a target from before records: its labels are what there is
    names = fetch_all(
        conn,
        sql.SQL("SELECT substr(key, 7) FROM {} WHERE key LIKE 'model:%%' AND value = %s ORDER BY key LIMIT 1").format(
            target.meta.ident
        ),
        (identity.key,),
    )
    if names:
        return str(names[0][0])
    return _allocate(conn, target, identity) if create else None


def _allocate(conn: Connection, target: TargetTable, identity: ModelIdentity) -> str:
    """The first free name of label, label@digest[:8], label@digest for ``identity`` (one another run
    allocated for it at the same moment counts as its own)."""
    digest = hashlib.sha256(identity.key.encode()).hexdigest()
    insert = sql.SQL("INSERT INTO {} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING").format(
        target.meta.ident
    )
    holder = sql.SQL("SELECT value FROM {} WHERE key = %s").format(target.meta.ident)
    for name in (identity.label, f"{identity.label}@{digest[:8]}", f"{identity.label}@{digest}"):
        with conn.cursor() as cur:
            cur.execute(insert, (f"model:{name}", identity.key))
        if fetch_all(conn, holder, (f"model:{name}",))[0][0] == identity.key:
            return name
    raise SchemaError(f"target {target.label!r} has no free name for model {identity.label!r}")  # a digest collision
