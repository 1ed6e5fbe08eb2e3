"""Finding the source table and checking that embedlib can key vectors by its id column.

Type names come from the catalog's own ``format_type``, which quotes what needs quoting.
"""

from __future__ import annotations

from embedlib.db.relations import SourceTable, check_percent, columns_of, find_relation, parse_template
from embedlib.db.session import Connection, fetch_all
from embedlib.errors import SchemaError


def inspect_source(
    conn: Connection, table: str, id_column: str, text_column: str, template: str | None = None
) -> SourceTable:
    """Check that ``table`` exists with a unique id column and a text column (the same column may be
    both); or, given a ``template`` (``relations.parse_template``), the columns it names, of any type."""
    parts = parse_template(template) if template is not None else ()
    text_columns = [name for _, name in parts if name is not None] or [text_column]
    for column, what in ((id_column, "id column"), *((c, "text column") for c in text_columns)):
        check_percent(column, what)
    found = find_relation(conn, table)
    if found is None:
        raise SchemaError(f"table {table!r} does not exist")
    schema, name, oid = found
    check_percent(name, "table name")
    check_percent(schema, "schema name")
    columns = columns_of(conn, oid)
    for column in (id_column, *text_columns):
        if column not in columns:
            raise SchemaError(f"table {table!r} has no column {column!r} (it has: {', '.join(sorted(columns))})")
    _, text_type, text_category = columns[text_columns[0]]
    if not parts and text_category != "S":  # a template's columns may be of any type: each is cast to text
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
    return SourceTable(
        schema,
        name,
        id_column,
        text_columns[0],
        id_type,
        id_nullable=not not_null,
        oid=oid,
        template=parts,
        template_text=template,
    )


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
