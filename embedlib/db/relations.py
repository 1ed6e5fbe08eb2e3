"""What a table is to embedlib: its name (parsed and quoted as SQL does) and the
descriptors of the source and target tables that every layer passes around.

Names come from users, so they are only ever compared as parameters against
the catalog or composed with ``sql.Identifier``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from psycopg2 import sql

from embedlib.db.queue import ChangeQueue
from embedlib.db.session import Connection, fetch_all, qualified
from embedlib.errors import ConfigError, SchemaError
from embedlib.options import VECTOR_TYPES

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names


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


# A text template as parsed (see parse_template): literal text, then a column name or None.
Template = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class SourceTable(Relation):
    id_column: str
    text_column: str
    id_type: str  # as format_type prints it, e.g. 'bigint' or 'character varying(20)'
    id_nullable: bool = False  # a UNIQUE id column may hold NULLs: those rows cannot be keyed (see source)
    oid: int = 0  # the table itself, whatever it is called later (see provenance)
    template: Template = ()  # several columns as one text (--text-template); () for text_column alone
    template_text: str | None = None  # the template as given

    @property
    def text_label(self) -> str:
        """What the text is made of, for messages and the target's record of what it serves."""
        return self.template_text if self.template_text is not None else self.text_column

    def text_sql(self, alias: str | None = None) -> sql.Composable:
        """The row's text as an SQL expression on the source's columns (of ``alias``, if given): its
        text column, as text, or its template's columns, each as text, NULL as empty, joined."""

        def column(name: str) -> sql.Composable:
            return sql.SQL("CAST({} AS text)").format(sql.Identifier(alias, name) if alias else sql.Identifier(name))

        if not self.template:
            return column(self.text_column)
        parts: list[sql.Composable] = []
        for literal, name in self.template:
            parts.extend([sql.Literal(literal)] if literal else [])
            parts.extend([column(name)] if name is not None else [])
        return sql.SQL("concat({})").format(sql.SQL(", ").join(parts))


@dataclass(frozen=True)
class TargetTable(Relation):
    id_type: str
    dimension: int
    # Tables beside the target are named <stem>_errors, _leases, _claims (see side_table_stem).
    stem: str
    vector_type: str = "vector"  # a value of VECTOR_TYPES
    # One row per chunk of a row's text (plan.chunking), keyed (id, chunk), not one per row. The
    # row's own columns (text_hash, model, char_length, token_count, frequency) are on each.
    chunked: bool = False

    def first_chunk(self, alias: str) -> sql.Composable:
        """The condition that picks one row of the target per source row: its first chunk."""
        return sql.SQL("{}.chunk = 0").format(sql.Identifier(alias)) if self.chunked else sql.SQL("TRUE")

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
        """Id ranges leased by running ingestors (see source.sharing)."""
        return Relation(self.schema, f"{self.stem}_leases")

    @property
    def claims(self) -> Relation:
        """Texts claimed by running ingestors (see source.sharing)."""
        return Relation(self.schema, f"{self.stem}_claims")

    @property
    def meta(self) -> Relation:
        """What the target serves: its source and columns, and the models its vectors come from."""
        return Relation(self.schema, f"{self.stem}_meta")

    @property
    def queue(self) -> ChangeQueue:
        """The ids of source rows changed since they were embedded, on a tracked table (store.tracking)."""
        return ChangeQueue(Relation(self.schema, f"{self.stem}_queue"), self.id_type)


def parse_template(template: str) -> Template:
    r"""``'{title}\n\n{body}'`` as (literal, column) pairs. A backslash and ``n`` (or ``t``), as a
    shell passes them, stand for a newline (a tab); ``{{`` and ``}}`` for braces."""
    text = template.replace("\\n", "\n").replace("\\t", "\t")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"text template {template!r}: {exc}", option="text_template") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name == "" or spec or conversion:
            raise ConfigError(
                f"text template {template!r}: write each column as {{name}}, with no format or conversion",
                option="text_template",
            )
        if "%" in literal:
            raise ConfigError(
                f"text template {template!r} holds a '%', which psycopg2 cannot pass in a statement",
                option="text_template",
            )
        parts.append((literal, name))
    if not any(name for _, name in parts):
        raise ConfigError(
            f"text template {template!r} names no column: write one as {{column}}", option="text_template"
        )
    return tuple(parts)


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


def columns_of(conn: Connection, oid: int) -> dict[str, tuple[int, str, str]]:
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
