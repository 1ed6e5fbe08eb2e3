"""``embedlib load``: put lines of text into a table so there is something to embed."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from importlib import resources

from psycopg2 import sql

from embedlib.db import copybin
from embedlib.db.relations import find_relation, split_name
from embedlib.db.session import Connection, qualified
from embedlib.errors import ConfigError
from embedlib.source.tables import inspect_source

CHUNK_LINES = 10_000


def load_lines(conn: Connection, table: str, lines: Iterable[str], *, text_column: str = "text") -> int:
    """Append one row per non-empty line to ``table``, creating ``table(id, text)`` if missing
    (``schema.table`` in that schema, which must exist).

    All lines go in one transaction: a bad line (a NUL character, which
    PostgreSQL text cannot hold) leaves the table as it was.
    """
    found = find_relation(conn, table)
    ident: sql.Composable
    if found is None:
        schema, name = split_name(table)  # as ingest reads it: schema.name, or a "quoted.name"
        ident = sql.Identifier(name) if schema is None else qualified(schema, name)
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {} text NOT NULL)"
                ).format(ident, sql.Identifier(text_column))
            )
    else:
        # the same checks as ingest, so that what load appends can be ingested
        ident = inspect_source(conn, table, "id", text_column).ident
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(ident, sql.Identifier(text_column))
    loaded = 0
    try:
        with conn.cursor() as cur:
            for chunk in _chunks(_texts(lines), CHUNK_LINES):
                cur.copy_expert(copy, io.BytesIO(copybin.payload([copybin.text(chunk)])))
                loaded += len(chunk)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return loaded


def _texts(lines: Iterable[str]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if "\x00" in text:
            raise ConfigError(f"line {number} contains a NUL character, which postgresql text cannot store")
        if text:
            yield text


def _chunks(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sample_lines() -> list[str]:
    """The bundled sample: real English sentences, one per line."""
    return resources.files("embedlib").joinpath("data/sample_sentences.txt").read_text("utf-8").splitlines()
