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
# bytes per dimension; ``halfvec`` holds float16, 2 (docs/performance.md#halfvec
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

    def exists(self, conn: Connection) -> bool:
        return bool(fetch_all(conn, "SELECT to_regclass(%s) IS NOT NULL", (self.ident.as_string(conn),))[0][0])


@dataclass(frozen=True)
class SourceTable(Relation):
    id_column: str
    text_column: str
    id_type: str  # as format_type prints it, e.g. 'bigint' or 'character varying(20)'
    id_nullable: bool = False  # a UNIQUE id column may hold NULLs: those rows cannot be keyed (see source)
    oid: int = 0  # the table itself, whatever it is called later (see provenance)


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

    @property
    def meta(self) -> Relation:
        """What the target serves: its source and columns, and the models its vectors come from."""
        return Relation(self.schema, f"{self.stem}_meta")


def check_percent(name: str, what: str) -> None:
    """Refuse a name with ``%``: psycopg2 reads it, even quoted, as a parameter marker in any
    statement that has parameters (and most of embedlib's do)."""
    if "%" in name:
        raise SchemaError(f"{what} {name!r} holds a '%', which psycopg2 cannot pass in a statement; rename it")


def split_name(name: str) -> tuple[str | None, str]:
    """``(schema or None, name)`` from ``name`` or ``schema.name``; a part in double quotes is taken
    as it is, as SQL does (``"a.b"`` is one name with a dot, ``""`` a quote in it)."""
    parts: list[str] = []
    rest = name
    while True:
        if rest.startswith('"'):
            match = re.match(r'"((?:[^"]|"")*)"', rest)
            if match is None:
                raise SchemaError(f"unterminated quote in table name {name!r}")
            parts.append(match.group(1).replace('""', '"'))
            rest = rest[match.end() :]
        else:
            part, dot, after = rest.partition(".")
            parts.append(part)
            rest = dot + after
        if not rest:
            break
        if not rest.startswith(".") or len(parts) == 2:
            raise SchemaError(f"table name {name!r} is not NAME or SCHEMA.NAME (quote a name with a dot: '\"a.b\"')")
        rest = rest[1:]
    if not all(parts):
        raise SchemaError(f"table name {name!r} has an empty part")
    for part in parts:
        check_percent(part, "table name")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def find_relation(conn: Connection, name: str) -> tuple[str, str, int] | None:
    """(schema, name, oid) of a table, view or materialized view called ``name``.

    ``name`` is looked up as it is on the search path first, so a table whose
    name contains a dot still works; failing that, ``schema.table``.
    """
    on_path = """
        SELECT n.nspname, c.relname, c.oid::int
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname = ANY (current_schemas(false))
        ORDER BY array_position(current_schemas(false), n.nspname)
        LIMIT 1
        """
    rows = fetch_all(conn, on_path, {"name": name})
    if rows:
        return (rows[0][0], rows[0][1], rows[0][2])
    schema, relname = split_name(name)
    if schema is None:
        rows = fetch_all(conn, on_path, {"name": relname})
    else:
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
    """Check that ``table`` exists with a unique id column and a text column (the same column may be both)."""
    for column, what in ((id_column, "id column"), (text_column, "text column")):
        check_percent(column, what)
    found = find_relation(conn, table)
    if found is None:
        raise SchemaError(f"table {table!r} does not exist")
    schema, name, oid = found
    check_percent(name, "table name")
    check_percent(schema, "schema name")
    columns = _columns(conn, oid)
    for column in (id_column, text_column):
        if column not in columns:
            raise SchemaError(f"table {table!r} has no column {column!r} (it has: {', '.join(sorted(columns))})")
    _, text_type, text_category = columns[text_column]
    if text_category != "S":
        raise SchemaError(f"column {text_column!r} of table {table!r} is {text_type}, not a text type")
    id_attnum, id_type, _ = columns[id_column]
    kind, children, not_null = fetch_all(
        conn,
        """
        SELECT c.relkind::text,
               (SELECT array_agg(k.relname::text ORDER BY k.relname) FROM pg_inherits i
                JOIN pg_class k ON k.oid = i.inhrelid WHERE i.inhparent = c.oid AND c.relkind = 'r'),
               (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = %s)
        FROM pg_class c WHERE c.oid = %s
        """,
        (id_attnum, oid),
    )[0]
    if children:
        # A parent's unique index does not cover its children's rows, which a read of it includes.
        raise SchemaError(
            f"table {table!r} has inheritance children ({', '.join(children)}) whose ids its unique index "
            "does not cover, so ids may repeat; embed each child table on its own"
        )
    _check_unique(conn, table, oid, kind, id_column, id_attnum)
    return SourceTable(schema, name, id_column, text_column, id_type, id_nullable=not not_null, oid=oid)


def _check_unique(conn: Connection, table: str, oid: int, kind: str, id_column: str, id_attnum: int) -> None:
    """Embeddings are keyed by id: without uniqueness two rows would fight over one embedding,
    and reading in id order could skip rows. Each refusal says what applies to the relation at hand."""
    if kind in ("v", "f"):
        what = "a view" if kind == "v" else "a foreign table"
        raise SchemaError(
            f"{table!r} is {what}, which cannot have the unique index on {id_column!r} that embedlib keys "
            "vectors by; embed the table it reads, or a materialized view with a unique index on the id"
        )
    indexes = fetch_all(
        conn,
        """
        SELECT indnkeyatts, indpred IS NOT NULL OR indexprs IS NOT NULL,
               (SELECT string_agg(a.attname, ', ' ORDER BY k.n) FROM unnest(indkey) WITH ORDINALITY k(attnum, n)
                JOIN pg_attribute a ON a.attrelid = indrelid AND a.attnum = k.attnum)
        FROM pg_index WHERE indrelid = %s AND indisunique AND %s = ANY (indkey)
        """,
        (oid, id_attnum),
    )
    if any(keys == 1 and not partial for keys, partial, _ in indexes):
        return
    composite = next((columns for keys, _, columns in indexes if keys > 1), None)
    if composite:
        raise SchemaError(
            f"column {id_column!r} of table {table!r} is unique only together with others ({composite}); "
            "embedlib keys vectors by one unique column: add one, e.g. ALTER TABLE ... ADD COLUMN embed_id "
            "bigint GENERATED ALWAYS AS IDENTITY UNIQUE, and pass --id-column embed_id"
        )
    if indexes:
        raise SchemaError(
            f"column {id_column!r} of table {table!r} is unique only where a partial or expression index "
            f"says so; embedlib keys embeddings by it, so it needs a unique index on the whole column "
            f"(e.g. CREATE UNIQUE INDEX ON ... ({id_column}))"
        )
    advice = "CREATE UNIQUE INDEX ON ... ({})" if kind == "m" else "ALTER TABLE ... ADD PRIMARY KEY ({})"
    raise SchemaError(
        f"column {id_column!r} of table {table!r} has no unique index; embedlib keys embeddings "
        f"by it (add one, e.g. {advice.format(id_column)})"
    )


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
    columns = _columns(conn, oid)
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
    if not fetch_all(conn, _PRIMARY_KEY_ON_ID, (oid, columns["id"][0]))[0][0]:
        raise SchemaError(
            f"target {label!r} has no primary key on id (restored without it?); add it before embedding "
            f"into it: ALTER TABLE {qualified(schema, name).as_string(conn)} ADD PRIMARY KEY (id)"
        )
    vector_type, dimension = match.group(1), int(match.group(2))
    return TargetTable(schema, name, source.id_type, dimension, side_table_stem(conn, schema, name), vector_type)


_PRIMARY_KEY_ON_ID = (
    "SELECT EXISTS (SELECT FROM pg_index WHERE indrelid = %s AND indisprimary AND indnkeyatts = 1 AND indkey[0] = %s)"
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
        table = TargetTable(schema, name, source.id_type, dimension, side_table_stem(conn, schema, name), vector_type)
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
            # but slower from two writers at once (docs/performance.md).
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
