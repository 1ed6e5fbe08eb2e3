"""Writing vectors and metrics: binary COPY into a staging table, then one upsert.

Each batch is one transaction: either all of its rows are stored or none,
so a run stopped at any moment leaves no half-written batch behind.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from psycopg2 import sql

from embedlib import copybin
from embedlib.db import Connection
from embedlib.metrics import UNKNOWN_TOKENS, TextMetrics
from embedlib.schema import SourceTable, TargetTable

_STAGE = sql.Identifier("embedlib_stage")
_METRICS_STAGE = sql.Identifier("embedlib_metrics_stage")

# Columns shared by both staging tables, in COPY order (id last: the only variable-width one).
_METRIC_STAGE_COLUMNS = "text_hash text, char_length int4, token_count int4, truncated bool, id text"


class Sink:
    """Writes batches through one connection (so one Sink per worker)."""

    def __init__(self, conn: Connection, target: TargetTable, model: str) -> None:
        self._conn = conn
        self._target = target
        self._model = model
        self._staged: set[str] = set()

    def _stage(self, name: sql.Identifier, columns: str) -> None:
        key = name.string
        if key in self._staged:
            return
        with self._conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(name, sql.SQL(columns))
            )
        self._conn.commit()
        self._staged.add(key)

    def write_embeddings(
        self, ids: Sequence[str], text_hashes: Sequence[str], vectors: np.ndarray, metrics: TextMetrics
    ) -> None:
        """Upsert one row per id; metric arrays and vectors are per row here."""
        self._stage(_STAGE, f"embedding vector({self._target.dimension}), norm float4, {_METRIC_STAGE_COLUMNS}")
        norms = np.linalg.norm(vectors, axis=1)
        data = copybin.payload(
            [copybin.vector(vectors), copybin.float4(norms), *_metric_columns(text_hashes, metrics), copybin.text(ids)]
        )
        upsert = sql.SQL(
            """
            INSERT INTO {target} AS t
                (id, embedding, model, text_hash, char_length, token_count, truncated, norm, embedded_at)
            SELECT CAST(s.id AS {id_type}), s.embedding, %(model)s, s.text_hash, s.char_length,
                   NULLIF(s.token_count, %(unknown)s),
                   CASE WHEN s.token_count = %(unknown)s THEN NULL ELSE s.truncated END,
                   s.norm, now()
            FROM pg_temp.{stage} s
            ON CONFLICT (id) DO UPDATE SET
                embedding = EXCLUDED.embedding, model = EXCLUDED.model, text_hash = EXCLUDED.text_hash,
                char_length = EXCLUDED.char_length, token_count = EXCLUDED.token_count,
                truncated = EXCLUDED.truncated, norm = EXCLUDED.norm, embedded_at = EXCLUDED.embedded_at,
                -- a changed text may have a different frequency: refreshed at the end of the run
                frequency = CASE WHEN t.text_hash = EXCLUDED.text_hash THEN t.frequency END
            """
        ).format(target=self._target.ident, id_type=sql.SQL(self._target.id_type), stage=_STAGE)
        self._copy_and_run(_STAGE, data, upsert)

    def write_metrics(self, ids: Sequence[str], text_hashes: Sequence[str], metrics: TextMetrics) -> None:
        """Update metrics of rows already embedded (norm recomputed from the stored vector)."""
        self._stage(_METRICS_STAGE, _METRIC_STAGE_COLUMNS)
        data = copybin.payload([*_metric_columns(text_hashes, metrics), copybin.text(ids)])
        update = sql.SQL(
            """
            UPDATE {target} AS t SET
                char_length = s.char_length,
                token_count = NULLIF(s.token_count, %(unknown)s),
                truncated = CASE WHEN s.token_count = %(unknown)s THEN NULL ELSE s.truncated END,
                norm = vector_norm(t.embedding)
            FROM pg_temp.{stage} s
            WHERE t.id = CAST(s.id AS {id_type}) AND t.text_hash = s.text_hash AND t.model = %(model)s
            """
        ).format(target=self._target.ident, id_type=sql.SQL(self._target.id_type), stage=_METRICS_STAGE)
        self._copy_and_run(_METRICS_STAGE, data, update)

    def _copy_and_run(self, stage: sql.Identifier, data: bytes, statement: sql.Composed) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.copy_expert(sql.SQL("COPY pg_temp.{} FROM STDIN (FORMAT binary)").format(stage), io.BytesIO(data))
                cur.execute(statement, {"model": self._model, "unknown": UNKNOWN_TOKENS})
            self._conn.commit()  # ON COMMIT DELETE ROWS empties the stage
        except BaseException:
            self._conn.rollback()
            raise


def _metric_columns(text_hashes: Sequence[str], metrics: TextMetrics) -> list[copybin.Column]:
    return [
        copybin.fixed_text(text_hashes, 32),  # md5 hex digest
        copybin.int4(metrics.char_length),
        copybin.int4(metrics.token_count),
        copybin.boolean(metrics.truncated),
    ]


def delete_embeddings(conn: Connection, target: TargetTable, ids: Sequence[str]) -> int:
    """Remove the vectors of rows whose text is now blank: they describe text that is gone."""
    if not ids:
        return 0
    statement = sql.SQL("DELETE FROM {target} WHERE id = ANY (CAST(%s AS {id_type}[]))").format(
        target=target.ident, id_type=sql.SQL(target.id_type)
    )
    with conn.cursor() as cur:
        cur.execute(statement, (list(ids),))
        deleted = cur.rowcount
    conn.commit()
    return deleted


def refresh_frequency(conn: Connection, source: SourceTable, target: TargetTable) -> int:
    """Set ``frequency`` (rows of the source holding the same text) set-wise, in one statement.

    Counting per row with a query each would be one scan per row; this is one
    scan of the source per run, whatever the executor. Returns rows changed.
    """
    statement = sql.SQL(
        """
        UPDATE {target} AS t SET frequency = f.n
        FROM (SELECT md5(s.{text}) AS text_hash, count(*)::int AS n
              FROM {source} s WHERE s.{text} IS NOT NULL GROUP BY 1) AS f
        WHERE t.text_hash = f.text_hash AND t.frequency IS DISTINCT FROM f.n
        """
    ).format(target=target.ident, source=source.ident, text=sql.Identifier(source.text_column))
    with conn.cursor() as cur:
        cur.execute(statement)
        changed = cur.rowcount
    conn.commit()
    return changed
