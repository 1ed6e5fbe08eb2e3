"""Nearest neighbours of a query among stored vectors: ``Ingestor.search`` and ``embedlib search``.

The query is embedded by the same model as the stored vectors, and only
that model's rows are searched: a target whose vectors came from another
model is refused with a message naming it (distances between two models'
vectors mean nothing). The metric picks the operator; with an index of the
same metric (see ``index``) PostgreSQL walks the index instead of scanning.
An HNSW scan returns at most ``hnsw.ef_search`` rows (40 by default), so it
is raised to ``k`` for larger ``k`` (up to pgvector's limit, 1000), and
iterative scans are on, so that the scan goes on past ``ef_search`` rows,
and rows of other models filtered out after it do not leave fewer than
``k``. Where an index scan still gives fewer than ``k`` (it stopped at
``hnsw.max_scan_tuples``, or the target holds fewer rows of this model), the
query is run again as an exact scan: ``k`` rows whenever there are ``k``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from psycopg2 import sql

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all, transaction
from embedlib.encode.base import Encoder, resolve_encoder
from embedlib.encode.failures import unstorable_rows
from embedlib.encode.identity import model_identity, model_label
from embedlib.errors import ModelError
from embedlib.query.index import check_metric
from embedlib.rules import Whole
from embedlib.source.reader import has_vectors
from embedlib.store.provenance import model_key

OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}  # ip: the negative inner product
MAX_EF_SEARCH = 1000  # pgvector refuses a larger hnsw.ef_search


class Match(NamedTuple):
    id: Any
    text: str  # the row's whole text
    distance: float
    # On a chunked target, the chunk that matched best: its place, and its offsets in ``text``.
    chunk: int | None = None
    start: int | None = None
    end: int | None = None

    @property
    def snippet(self) -> str:
        """The part of the text that matched: the chunk's, or the text's whole. (The offsets are the
        text's when it was embedded: a text changed since shows what is there now.)"""
        text = self.text or ""
        return text if self.start is None else text[self.start : self.end]


def nearest(
    conn: Connection,
    source: SourceTable,
    target: TargetTable,
    model: str | Encoder,
    query: str,
    k: int = 10,
    metric: str = "cosine",
) -> list[Match]:
    """The ``k`` rows whose vectors are closest to ``query``'s, embedded by ``model``, closest first.

    ``model`` is a name, path, URL or encoder, as ``Ingestor``'s; a name is
    loaded only once the target is known to hold its vectors.
    """
    check_metric(metric)
    Whole(1).check("k", k)
    name, vector = _embedded_query(conn, target, model, query)
    literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
    statement = sql.SQL(_CHUNKS if target.chunked else _ROWS).format(
        id=sql.Identifier(source.id_column),
        text=source.text_sql("s"),
        operator=sql.SQL(OPERATORS[metric]),
        vector_type=sql.SQL(target.vector_type),  # the query's type must be the column's for its index to be used
        target=target.ident,
        source=source.ident,
    )
    # A chunked target's nearest chunks may hold several of one row's: look at more of them.
    candidates = k * _CHUNKS_PER_ROW if target.chunked else k
    parameters: dict[str, Any] = {"query": literal, "model": name, "k": k, "candidates": candidates}
    with transaction(conn), conn.cursor() as cur:
        # SET LOCAL: for this query only, and harmless where no index is used.
        cur.execute("SET LOCAL hnsw.ef_search = %s", (min(max(40, candidates), MAX_EF_SEARCH),))
        cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur.execute("SET LOCAL ivfflat.iterative_scan = relaxed_order")
        cur.execute(statement, parameters)
        rows = cur.fetchall()
        while target.chunked and len(rows) < k and parameters["candidates"] < k * _CHUNKS_PER_ROW**2:
            # The nearest chunks held fewer than k rows (a row's chunks are alike): look at more.
            parameters["candidates"] *= _CHUNKS_PER_ROW
            cur.execute(statement, parameters)
            rows = cur.fetchall()
        if len(rows) < k:  # the index gave what it could: the exact answer, by a scan of every row
            cur.execute("SET LOCAL enable_indexscan = off")
            cur.execute("SET LOCAL enable_seqscan = on")
            cur.execute(statement, {**parameters, "candidates": None})  # LIMIT NULL: every chunk
            rows = cur.fetchall()
    # relaxed_order may return neighbours slightly out of order: put them in order
    return sorted((Match(*row) for row in rows), key=lambda match: match.distance)


_ROWS = """
    SELECT s.{id}, {text}, t.embedding {operator} CAST(%(query)s AS {vector_type}) AS distance
    FROM {target} t JOIN {source} s ON s.{id} = t.id
    WHERE t.model = %(model)s
    ORDER BY t.embedding {operator} CAST(%(query)s AS {vector_type}) LIMIT %(k)s
"""
# Each row once, by its nearest chunk, among the nearest chunks (by the index, where there is one).
_CHUNKS = """
    SELECT s.{id}, {text}, b.distance, b.chunk, b.start_char, b.end_char
    FROM (SELECT DISTINCT ON (c.id) c.id, c.chunk, c.start_char, c.end_char, c.distance
          FROM (SELECT t.id, t.chunk, t.start_char, t.end_char,
                       t.embedding {operator} CAST(%(query)s AS {vector_type}) AS distance
                FROM {target} t WHERE t.model = %(model)s
                ORDER BY t.embedding {operator} CAST(%(query)s AS {vector_type}) LIMIT %(candidates)s) c
          ORDER BY c.id, c.distance) b
    JOIN {source} s ON s.{id} = b.id
    ORDER BY b.distance LIMIT %(k)s
"""
_CHUNKS_PER_ROW = 8


def check_model(conn: Connection, target: TargetTable, model: str | None, label: str) -> None:
    """Refuse a search whose model (stored as ``model`` in the target, if at all) made none of its vectors."""
    if model is not None and has_vectors(conn, target, model):
        return
    models = [name for (name,) in fetch_all(conn, sql.SQL("SELECT DISTINCT model FROM {}").format(target.ident))]
    if not models:
        raise ModelError(f"{target.label!r} holds no vectors yet: run embedlib ingest first")
    stored = ", ".join(repr(name) for name in sorted(models))
    if label in models:  # the label is taken by another model: same name, other files or endpoint
        raise ModelError(
            f"{target.label!r} holds vectors of another model also called {label!r} (its files or endpoint "
            f"differ from this one's; stored: {stored}): search with the model that made them (--model)"
        )
    raise ModelError(
        f"{target.label!r} holds vectors of {stored}, not of {label!r}: search with the model that made them (--model)"
    )


def _embedded_query(conn: Connection, target: TargetTable, model: str | Encoder, query: str) -> tuple[str, np.ndarray]:
    """The name ``model``'s vectors are stored under in ``target``, and ``query`` embedded by it; refused
    unless ``target`` holds that model's vectors."""
    try:
        identity = model_identity(model)  # a name's files are looked for (and fingerprinted)
    except ModelError:
        # A model that is not even installed: a target holding only other models' vectors is the
        # first thing to say (the model is the wrong one, installed or not).
        label = model_label(model)
        if not has_vectors(conn, target, label):
            check_model(conn, target, None, label)
        raise
    name = model_key(conn, target, identity, create=False)  # None: the target knows no such model
    check_model(conn, target, name, identity.label)
    assert name is not None  # check_model refuses a model the target holds no vectors of
    vector = np.asarray(resolve_encoder(model).encode([query]), dtype=np.float32)[0]
    unusable = unstorable_rows(vector[None, :], target.vector_type)
    if unusable:
        raise ModelError(f"the model's vector for the query {query[:80]!r} cannot be searched with: {unusable[0]}")
    return name, vector
