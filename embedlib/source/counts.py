"""Counting the source's rows: all of them, those without an id, those given up on, and texts held
by more than one row. Each is one query; none needs the target beyond its errors table."""

from __future__ import annotations

from psycopg2 import sql

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all
from embedlib.source.reader import NOT_BLANK, Retries, rows_of


def count_rows(conn: Connection, source: SourceTable) -> tuple[int, int]:
    """The source's rows with an id, and how many of them hold text (the others are blank)."""
    query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {text}) FROM {rows} s").format(
        text=NOT_BLANK, rows=rows_of(source)
    )
    rows, with_text = fetch_all(conn, query)[0]
    return int(rows), int(with_text)


def count_null_ids(conn: Connection, source: SourceTable) -> int:
    """Rows whose id is NULL (a UNIQUE column may hold many): nothing can key their vectors."""
    if not source.id_nullable:
        return 0
    query = sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(source.ident, sql.Identifier(source.id_column))
    return int(fetch_all(conn, query)[0][0])


def count_given_up(conn: Connection, source: SourceTable, target: TargetTable, retries: Retries) -> int:
    """Rows left out because their text failed ``max_attempts`` times (in the errors table)."""
    query = sql.SQL(
        "SELECT count(*) FROM {errors} e JOIN {source} s ON s.{id} = e.id "
        "WHERE e.attempts >= %s AND e.text_hash = md5({text})"
    ).format(
        errors=target.errors.ident,
        source=source.ident,
        id=sql.Identifier(source.id_column),
        text=source.text_sql("s"),
    )
    return int(fetch_all(conn, query, (retries.max_attempts,))[0][0])


def duplicate_counts(conn: Connection, source: SourceTable) -> dict[str, int]:
    """Texts held by more than one row, by md5: one scan of the source, no target involved.

    Every other text has a frequency of one. The map grows with the number
    of distinct duplicated texts (about 100 bytes each), not with the table.
    """
    query = sql.SQL(
        "SELECT md5({text}), count(*) FROM {source} WHERE {text} IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
    ).format(text=source.text_sql(), source=source.ident)
    return {text_hash: int(n) for text_hash, n in fetch_all(conn, query)}
