"""Creating or checking the target table and the tables beside it.

Type names come from the catalog's own ``format_type``, which quotes what needs quoting.
"""

from __future__ import annotations

import re

from psycopg2 import sql

from embedlib.db.relations import MAX_IDENTIFIER_BYTES, Relation, SourceTable, TargetTable, columns_of, split_name
from embedlib.db.session import Connection, fetch_all, qualified
from embedlib.errors import SchemaError
from embedlib.options import VECTOR_TYPES

# The target's columns, after id and embedding, in the order they are written.
METRIC_COLUMNS = ("model", "text_hash", "char_length", "token_count", "truncated", "norm", "frequency", "embedded_at")
# A chunked target's columns beside those: the chunk's place, offsets in the text, hash and tokens.
CHUNK_COLUMNS = ("chunk", "start_char", "end_char", "chunk_hash", "chunk_tokens")


def target_name(source: SourceTable, target: str | None) -> tuple[str, str]:
    """(schema, name) of the target: ``<table>_embeddings`` beside the source unless named; a name
    without a schema lives in the source's schema, whatever the search path says."""
    schema, name = split_name(target) if target else (None, f"{source.name}_embeddings")
    _check_length(name)
    return schema or source.schema, name


def side_table_stem(conn: Connection, schema: str, name: str) -> str:
    """What the tables beside the target ``schema.name`` are named after: ``x_embedding`` for a
    target ``x_embeddings`` (so ``x_embedding_errors``), else the target's name.

    It depends on the target alone, so every source naming the same target
    finds the same side tables (and its record of what it serves). An older
    target named ``..._embeddings`` through --target keeps its ``<name>_errors``.
    """
    stem = name[: -len("s")] if name.endswith("_embeddings") else name
    if stem != name and Relation(schema, f"{name}_errors").exists(conn):
        stem = name
    _check_length(f"{stem}_errors")
    return stem


def _check_length(name: str) -> None:
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise SchemaError(
            f"table name {name!r} is longer than postgresql's {MAX_IDENTIFIER_BYTES} bytes; choose a shorter --target"
        )


def existing_target(conn: Connection, source: SourceTable, target: str | None) -> TargetTable | None:
    """The target table if it exists, checked against what embedlib writes (``provenance.served_target``
    checks it against the source it serves, too)."""
    schema, name = target_name(source, target)
    rows = fetch_all(
        conn,
        "SELECT n.oid IS NOT NULL, c.oid::int, c.relkind::text FROM (SELECT %s::text AS nspname) w "
        "LEFT JOIN pg_namespace n ON n.nspname = w.nspname "
        "LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %s",
        (schema, name),
    )
    schema_exists, oid, kind = rows[0]
    if not schema_exists:
        raise SchemaError(f"schema {schema!r} of target {f'{schema}.{name}'!r} does not exist")
    if oid is None:
        return None
    label = f"{schema}.{name}"
    if kind not in ("r", "p"):
        raise SchemaError(f"{label!r} exists but is not a table; choose another --target")
    columns = columns_of(conn, oid)
    missing = [c for c in ("id", "embedding", *METRIC_COLUMNS) if c not in columns]
    if missing:
        raise SchemaError(
            f"table {label!r} exists but is not an embedlib target (no column {missing[0]!r}); "
            "choose another name with --target"
        )
    match = re.fullmatch(r"(vector|halfvec)\((\d+)\)", columns["embedding"][1])
    if match is None:
        raise SchemaError(f"column 'embedding' of {label!r} is {columns['embedding'][1]}, not vector(n) or halfvec(n)")
    if columns["id"][1] != source.id_type:
        raise SchemaError(
            f"column 'id' of {label!r} is {columns['id'][1]} but {source.id_column!r} of "
            f"{source.name!r} is {source.id_type}; choose another --target"
        )
    chunked = "chunk" in columns
    missing = [c for c in CHUNK_COLUMNS if c not in columns] if chunked else []
    if missing:
        raise SchemaError(f"table {label!r} has a 'chunk' column but no {missing[0]!r}: not an embedlib target")
    key = [columns["id"][0], columns["chunk"][0]] if chunked else [columns["id"][0]]
    if not fetch_all(conn, _PRIMARY_KEY, {"oid": oid, "key": key})[0][0]:
        what, key_sql = ("(id, chunk)", "(id, chunk)") if chunked else ("id", "(id)")
        raise SchemaError(
            f"target {label!r} has no primary key on {what} (restored without it?); add it before embedding "
            f"into it: ALTER TABLE {qualified(schema, name).as_string(conn)} ADD PRIMARY KEY {key_sql}"
        )
    vector_type, dimension = match.group(1), int(match.group(2))
    stem = side_table_stem(conn, schema, name)
    return TargetTable(schema, name, source.id_type, dimension, stem, vector_type, chunked=chunked)


# The primary key is on exactly these columns, in this order (indkey as text: "1 2").
_PRIMARY_KEY = (
    "SELECT EXISTS (SELECT FROM pg_index WHERE indrelid = %(oid)s AND indisprimary "
    "AND indnkeyatts = cardinality(CAST(%(key)s AS int2[])) "
    "AND (string_to_array(indkey::text, ' ')::int2[])[1:indnkeyatts] = CAST(%(key)s AS int2[]))"
)


def check_dtype(target: TargetTable, dtype: str | None) -> None:
    """Refuse to store ``dtype`` vectors in a target made for the other type (None: whatever it holds)."""
    if dtype is None or VECTOR_TYPES[dtype] == target.vector_type:
        return
    raise SchemaError(
        f"target {target.label!r} stores {target.embedding_type} ({target.dtype}), not --dtype {dtype}; "
        f"choose another --target, or convert it first: ALTER TABLE ... ALTER COLUMN embedding "
        f"TYPE {VECTOR_TYPES[dtype]}({target.dimension})"
    )


def ensure_target(
    conn: Connection,
    source: SourceTable,
    target: str | None,
    dimension: int,
    dtype: str | None = None,
    *,
    chunked: bool = False,
) -> TargetTable:
    """Create the target table if missing; check it fits the model and ``dtype`` if present. Commits.

    A new target stores ``dtype`` vectors (float unless given), one per chunk if ``chunked``
    (whether an existing one is, ``store.chunks`` checks).
    """
    schema, name = target_name(source, target)
    with conn.cursor() as cur:
        # Serialise creation between concurrent ingestors of the same target.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"embedlib:{schema}.{name}",))
    table = existing_target(conn, source, target)
    if table is None:
        vector_type = VECTOR_TYPES[dtype or "float"]
        stem = side_table_stem(conn, schema, name)
        table = TargetTable(schema, name, source.id_type, dimension, stem, vector_type, chunked=chunked)
        _create_target(conn, table)
        ensure_side_tables(conn, table)  # an existing target's are checked before (run.prepare)
    elif table.dimension != dimension:
        conn.rollback()
        raise SchemaError(
            f"target {name!r} holds {table.dimension}-dimensional vectors but the model makes "
            f"{dimension}-dimensional ones; choose another --target"
        )
    else:
        try:
            check_dtype(table, dtype)
        except SchemaError:
            conn.rollback()
            raise
    conn.commit()
    return table


def _create_target(conn: Connection, table: TargetTable) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """
                CREATE TABLE {target} (
                    id {id_type} NOT NULL,
                    {chunk_columns}
                    embedding {embedding_type} NOT NULL,
                    model text NOT NULL,
                    text_hash text NOT NULL,
                    char_length integer NOT NULL,
                    token_count integer,
                    truncated boolean,
                    norm real NOT NULL,
                    frequency integer,
                    embedded_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY {key}
                )
                """
            ).format(
                chunk_columns=sql.SQL(_CHUNK_COLUMNS if table.chunked else ""),
                key=sql.SQL("(id, chunk)" if table.chunked else "(id)"),
                target=table.ident,
                id_type=sql.SQL(table.id_type),  # from format_type: already quoted
                embedding_type=sql.SQL(table.embedding_type),  # a VECTOR_TYPES value and an int
            )
        )
        # Vector reuse and the frequency refresh look rows up by text hash; the
        # refresh also finds rows whose frequency is not 1 (few) by the partial index.
        # A btree, not a hash index: a hash index loaded faster from one connection
        # but slower from two writers at once (docs/performance.md).
        cur.execute(sql.SQL("CREATE INDEX ON {} (text_hash)").format(table.ident))
        cur.execute(sql.SQL("CREATE INDEX ON {} (text_hash) WHERE frequency IS DISTINCT FROM 1").format(table.ident))
        if table.chunked:  # chunks are reused by their own hash, as rows are by their text's
            cur.execute(sql.SQL("CREATE INDEX ON {} (chunk_hash)").format(table.ident))


# A chunked target's columns of its own: the chunk's place among the row's, its offsets in the
# row's text (text[start_char:end_char]), the md5 of its text and its tokens.
_CHUNK_COLUMNS = """
                    chunk integer NOT NULL,
                    start_char integer NOT NULL,
                    end_char integer NOT NULL,
                    chunk_hash text NOT NULL,
                    chunk_tokens integer,
"""


# The tables beside a target: what each holds is in TargetTable's properties.
_SIDE_TABLES = {
    # One row per source row whose text failed: its text's hash (a changed text
    # is a new chance), the last error, how many runs tried it, and when.
    "errors": """
        CREATE TABLE IF NOT EXISTS {table} (
            id {id_type} PRIMARY KEY,
            text_hash text NOT NULL,
            error text NOT NULL,
            attempts integer NOT NULL,
            first_failed_at timestamptz NOT NULL DEFAULT now(),
            failed_at timestamptz NOT NULL DEFAULT now()
        )
    """,
    "leases": "CREATE UNLOGGED TABLE IF NOT EXISTS {table} (holder int4 NOT NULL, model text NOT NULL, "
    "first_id {id_type} NOT NULL, last_id {id_type} NOT NULL)",
    "claims": "CREATE UNLOGGED TABLE IF NOT EXISTS {table} (model text NOT NULL, text_hash text NOT NULL, "
    "holder int4 NOT NULL, PRIMARY KEY (model, text_hash))",
    # What the target serves (key 'source': schema, table, id and text column, oid, as JSON) and
    # which model each name in its ``model`` column stands for (key 'model:<name>': identity).
    "meta": "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, value text NOT NULL)",
}


SIDE_TABLES = tuple(_SIDE_TABLES)  # the suffixes of the tables beside a target: <stem>_errors, ...


def ensure_side_tables(conn: Connection, target: TargetTable) -> None:
    """Create the tables beside the target that are missing (all of them, or those older versions lacked)."""
    for kind, statement in _SIDE_TABLES.items():
        table: Relation = getattr(target, kind)
        if table.exists(conn):
            continue
        with conn.cursor() as cur:
            cur.execute(sql.SQL(statement).format(table=table.ident, id_type=sql.SQL(target.id_type)))
