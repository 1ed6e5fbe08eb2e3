"""Finding the source table, and creating or checking the target table.

Names come from users, so they are only ever compared as parameters against
the catalog or composed with ``sql.Identifier``; type names come from the
catalog's own ``format_type``, which quotes what needs quoting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg2 import sql

from embedlib.db import Connection, fetch_all, qualified
from embedlib.errors import SchemaError

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names

# The target's columns, after id and embedding, in the order they are written.
METRIC_COLUMNS = ("model", "text_hash", "char_length", "token_count", "truncated", "norm", "frequency", "embedded_at")

# How vectors are stored (--dtype): pgvector's ``vector`` holds float32, 4
# bytes per dimension; ``halfvec`` holds float16, 2 (README: "halfvec storage"
# has what it costs in recall). A target keeps the type it was created with.
VECTOR_TYPES = {"float": "vector", "half": "halfvec"}
DTYPES = tuple(VECTOR_TYPES)


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str

    @property
    def ident(self) -> sql.Composed:
        """The quoted, schema-qualified name, for composing statements."""
        return qualified(self.schema, self.name)

    @property
    def label(self) -> str:
        """The name for messages and reports."""
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SourceTable(Relation):
    id_column: str
    text_column: str
    id_type: str  # as format_type prints it, e.g. 'bigint' or 'character varying(20)'


@dataclass(frozen=True)
class TargetTable(Relation):
    id_type: str
    dimension: int
    # Tables beside the target are named <stem>_errors, _leases, _claims (see side_table_stem).
    stem: str
    vector_type: str = "vector"  # a value of VECTOR_TYPES

    @property
    def dtype(self) -> str:
        """``float`` or ``half``: the key of ``vector_type`` in VECTOR_TYPES."""
        return next(dtype for dtype, vector_type in VECTOR_TYPES.items() if vector_type == self.vector_type)

    @property
    def embedding_type(self) -> str:
        """The embedding column's type, e.g. ``vector(384)`` or ``halfvec(384)``."""
        return f"{self.vector_type}({self.dimension})"

    @property
    def errors(self) -> Relation:
        """Rows whose text failed to embed (see failures)."""
        return Relation(self.schema, f"{self.stem}_errors")

    @property
    def leases(self) -> Relation:
        """Id ranges leased by running ingestors (see claims)."""
        return Relation(self.schema, f"{self.stem}_leases")

    @property
    def claims(self) -> Relation:
        """Texts claimed by running ingestors (see claims)."""
        return Relation(self.schema, f"{self.stem}_claims")


def find_relation(conn: Connection, name: str) -> tuple[str, str, int] | None:
    """(schema, name, oid) of a table, view or materialized view called ``name``.

    ``name`` is looked up as it is on the search path first, so a table whose
    name contains a dot still works; failing that, ``schema.table``.
    """
    rows = fetch_all(
        conn,
        """
        SELECT n.nspname, c.relname, c.oid::int
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname = ANY (current_schemas(false))
        ORDER BY array_position(current_schemas(false), n.nspname)
        LIMIT 1
        """,
        {"name": name},
    )
    if not rows and "." in name:
        schema, _, relname = name.partition(".")
        rows = fetch_all(
            conn,
            """
            SELECT n.nspname, c.relname, c.oid::int
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = %s AND n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            """,
            (relname, schema),
        )
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def _columns(conn: Connection, oid: int) -> dict[str, tuple[int, str, str]]:
    """column name -> (attnum, type as format_type prints it, type category)."""
    rows = fetch_all(
        conn,
        """
        SELECT a.attname, a.attnum::int, format_type(a.atttypid, a.atttypmod), t.typcategory
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (oid,),
    )
    return {name: (attnum, type_name, category) for name, attnum, type_name, category in rows}


def inspect_source(conn: Connection, table: str, id_column: str, text_column: str) -> SourceTable:
    """Check that ``table`` exists with a unique id column and a text column."""
    found = find_relation(conn, table)
    if found is None:
        raise SchemaError(f"table {table!r} does not exist")
    schema, name, oid = found
    columns = _columns(conn, oid)
    for column in (id_column, text_column):
        if column not in columns:
            raise SchemaError(f"table {table!r} has no column {column!r} (it has: {', '.join(sorted(columns))})")
    _, text_type, text_category = columns[text_column]
    if text_category != "S":
        raise SchemaError(f"column {text_column!r} of table {table!r} is {text_type}, not a text type")
    id_attnum, id_type, _ = columns[id_column]
    unique = fetch_all(
        conn,
        """
        SELECT 1 FROM pg_index
        WHERE indrelid = %s AND indisunique AND indnkeyatts = 1 AND indkey[0] = %s
          AND indpred IS NULL AND indexprs IS NULL
        """,
        (oid, id_attnum),
    )
    if not unique:
        # Embeddings are keyed by id: without uniqueness two rows would fight
        # over one embedding, and reading in id order could skip rows.
        raise SchemaError(
            f"column {id_column!r} of table {table!r} has no unique index; embedlib keys embeddings "
            f"by it (add one, e.g. ALTER TABLE ... ADD PRIMARY KEY ({id_column}))"
        )
    return SourceTable(schema, name, id_column, text_column, id_type)


def target_name(source: SourceTable, target: str | None) -> tuple[str, str]:
    """(schema, name) of the target: ``<table>_embeddings`` beside the source unless named."""
    name = target or f"{source.name}_embeddings"
    _check_length(name)
    return source.schema, name


def side_table_stem(source: SourceTable, target: str | None) -> str:
    """``<table>_embedding`` for the default target (so ``<table>_embedding_errors``), else the target's name."""
    stem = target or f"{source.name}_embedding"
    _check_length(f"{stem}_errors")
    return stem


def _check_length(name: str) -> None:
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise SchemaError(
            f"table name {name!r} is longer than postgresql's {MAX_IDENTIFIER_BYTES} bytes; choose a shorter --target"
        )


def existing_target(conn: Connection, source: SourceTable, target: str | None) -> TargetTable | None:
    """The target table if it exists, checked against what embedlib writes."""
    schema, name = target_name(source, target)
    found = find_relation(conn, target) if target else None
    if found is None:
        rows = fetch_all(
            conn,
            "SELECT c.oid::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = %s",
            (name, schema),
        )
        if not rows:
            return None
        found = (schema, name, rows[0][0])
    schema, name, oid = found
    columns = _columns(conn, oid)
    missing = [c for c in ("id", "embedding", *METRIC_COLUMNS) if c not in columns]
    if missing:
        raise SchemaError(
            f"table {name!r} exists but is not an embedlib target (no column {missing[0]!r}); "
            "choose another name with --target"
        )
    match = re.fullmatch(r"(vector|halfvec)\((\d+)\)", columns["embedding"][1])
    if match is None:
        raise SchemaError(f"column 'embedding' of {name!r} is {columns['embedding'][1]}, not vector(n) or halfvec(n)")
    if columns["id"][1] != source.id_type:
        raise SchemaError(
            f"column 'id' of {name!r} is {columns['id'][1]} but {source.id_column!r} of "
            f"{source.name!r} is {source.id_type}; choose another --target"
        )
    vector_type, dimension = match.group(1), int(match.group(2))
    return TargetTable(schema, name, source.id_type, dimension, side_table_stem(source, target), vector_type)


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
    conn: Connection, source: SourceTable, target: str | None, dimension: int, dtype: str | None = None
) -> TargetTable:
    """Create the target table if missing; check it fits the model and ``dtype`` if present. Commits.

    A new target stores ``dtype`` vectors (float unless given).
    """
    schema, name = target_name(source, target)
    with conn.cursor() as cur:
        # Serialise creation between concurrent ingestors of the same target.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"embedlib:{schema}.{name}",))
    table = existing_target(conn, source, target)
    if table is None:
        vector_type = VECTOR_TYPES[dtype or "float"]
        table = TargetTable(schema, name, source.id_type, dimension, side_table_stem(source, target), vector_type)
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    """
                    CREATE TABLE {target} (
                        id {id_type} PRIMARY KEY,
                        embedding {embedding_type} NOT NULL,
                        model text NOT NULL,
                        text_hash text NOT NULL,
                        char_length integer NOT NULL,
                        token_count integer,
                        truncated boolean,
                        norm real NOT NULL,
                        frequency integer,
                        embedded_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                ).format(
                    target=table.ident,
                    id_type=sql.SQL(source.id_type),  # from format_type: already quoted
                    embedding_type=sql.SQL(table.embedding_type),  # a VECTOR_TYPES value and an int
                )
            )
            # Vector reuse and the frequency refresh look rows up by text hash; the
            # refresh also finds rows whose frequency is not 1 (few) by the partial index.
            # A btree, not a hash index: a hash index loaded faster from one connection
            # but slower from two writers at once (1M rows: 30k against 34k rows/s).
            cur.execute(sql.SQL("CREATE INDEX ON {} (text_hash)").format(table.ident))
            cur.execute(
                sql.SQL("CREATE INDEX ON {} (text_hash) WHERE frequency IS DISTINCT FROM 1").format(table.ident)
            )
        ensure_side_tables(conn, table)  # an existing target's are checked before (Ingestor._prepare)
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
}


def ensure_side_tables(conn: Connection, target: TargetTable) -> None:
    """Create the tables beside the target that are missing (all of them, or those older versions lacked)."""
    for kind, statement in _SIDE_TABLES.items():
        table: Relation = getattr(target, kind)
        if fetch_all(conn, "SELECT to_regclass(%s) IS NOT NULL", (table.ident.as_string(conn),))[0][0]:
            continue
        with conn.cursor() as cur:
            cur.execute(sql.SQL(statement).format(table=table.ident, id_type=sql.SQL(target.id_type)))
