"""Nearest neighbours of a query among stored vectors (cosine distance)."""

from __future__ import annotations

from typing import Any, NamedTuple

from psycopg2 import sql

from embedlib.db import Connection, fetch_all
from embedlib.encoder import Encoder
from embedlib.schema import SourceTable, TargetTable


class Match(NamedTuple):
    id: Any
    text: str
    distance: float


def nearest(
    conn: Connection, source: SourceTable, target: TargetTable, encoder: Encoder, query: str, k: int = 5
) -> list[Match]:
    """The ``k`` rows whose vectors are closest to ``query``'s, embedded by ``encoder``."""
    vector = encoder.encode([query])[0]
    literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
    statement = sql.SQL(
        """
        SELECT s.{id}, s.{text}, t.embedding <=> CAST(%(query)s AS vector) AS distance
        FROM {target} t JOIN {source} s ON s.{id} = t.id
        WHERE t.model = %(model)s
        ORDER BY distance LIMIT %(k)s
        """
    ).format(
        id=sql.Identifier(source.id_column),
        text=sql.Identifier(source.text_column),
        target=target.ident,
        source=source.ident,
    )
    return [Match(*row) for row in fetch_all(conn, statement, {"query": literal, "model": encoder.name, "k": k})]
