"""Writing vectors and metrics: binary COPY into a staging table, then one upsert.

Each batch is one transaction: either all of its rows are stored or none,
so a run stopped at any moment leaves no half-written batch behind.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import psycopg2.errors
from psycopg2 import sql

from embedlib.db import copybin
from embedlib.db.queue import Cursor
from embedlib.db.relations import TargetTable
from embedlib.db.session import DEFAULT_RECONNECT_S, Connection, Session, autocommitting, transaction
from embedlib.store.metrics import UNKNOWN_TOKENS, TextMetrics
from embedlib.store.staging import Staging

_STAGE = sql.Identifier("embedlib_stage")
_METRICS_STAGE = sql.Identifier("embedlib_metrics_stage")

# Columns shared by both staging tables, in COPY order (id last: the only variable-width one).
_METRIC_STAGE_COLUMNS = "text_hash text, char_length int4, token_count int4, truncated bool, id text"


class Sink:
    """Writes batches through one ``Session`` (so one Sink per worker).

    Every write is one unit of the session: if the connection is lost, the
    whole transaction is run again on a new one. That is safe: a COPY whose
    commit went through unacknowledged meets its own rows the second time
    and falls back to the upsert, which writes the same values again; rows
    from a change queue are written only while their entries are there to
    take (``db.queue.ChangeQueue.settle``), so a retried write of them, or
    one whose rows changed again since, writes nothing.
    """

    def __init__(
        self,
        dsn: str,
        target: TargetTable,
        model: str,
        *,
        reconnect_s: float = DEFAULT_RECONNECT_S,
        holder: int | None = None,
    ) -> None:
        """``holder``: on a tracked table, the run's key (``sharing.Sharing.key``): rows read from
        the change queue (see ``db.queue``) are written in the transaction that takes their entries
        off it, and rows that fail are queued to be tried again."""
        self._target = target
        self._model = model
        self._holder = holder
        self._staging = Staging()  # the staging tables of the current connection
        # Sinks connect once a run is under way: a refused connection is a fault to wait out.
        self._session = Session(
            dsn, reconnect_s=reconnect_s, on_connect=lambda conn: self._staging.forget(), retry_first_connect=True
        )

    @property
    def reconnects(self) -> int:
        return self._session.reconnects

    @property
    def round_trips(self) -> int:
        return self._session.round_trips

    def close(self) -> None:
        self._session.close()

    def write_embeddings(
        self,
        ids: Sequence[str],
        text_hashes: Sequence[str] | np.ndarray,
        vectors: np.ndarray,
        metrics: TextMetrics,
        frequencies: np.ndarray,
        *,
        new_rows: bool = False,
        seqs: Sequence[int] | None = None,
    ) -> None:
        """Store one row per id; metric arrays, frequencies and vectors are per row here.

        ``new_rows`` says no id had a target row when it was read: then one
        COPY straight into the target does it, as fast as the database can
        load rows. Otherwise (or if a row appeared since) the rows go through
        a staging table and an upsert. ``seqs``: the rows' change queue
        entries; only the rows whose entry is still there are written (see
        the class), through the upsert, in the transaction that removes it.
        """
        # The norm of the vector as stored: a halfvec's is its float16 values' (as
        # write_metrics recomputes it, and as reused vectors come back).
        stored = vectors.astype(np.float16).astype(np.float32) if self._target.vector_type == "halfvec" else vectors
        norms = np.linalg.norm(stored, axis=1)
        columns = _embedding_columns(self._target, vectors, norms, frequencies, text_hashes, metrics)
        if new_rows and seqs is None:
            data = self._insert_payload(ids, columns, metrics)
            if data is not None and self._session.run(lambda conn: self._insert(conn, data)):
                return
        staged = copybin.payload([*columns, copybin.text(ids)])
        stage_columns = f"embedding {self._target.embedding_type}, norm float4, frequency int4, {_METRIC_STAGE_COLUMNS}"
        upsert = sql.SQL(
            """
            INSERT INTO {target} AS t
                (id, embedding, model, text_hash, char_length, token_count, truncated, norm, frequency, embedded_at)
            SELECT CAST(s.id AS {id_type}), s.embedding, %(model)s, s.text_hash, s.char_length,
                   NULLIF(s.token_count, %(unknown)s),
                   CASE WHEN s.token_count = %(unknown)s THEN NULL ELSE s.truncated END,
                   s.norm, s.frequency, now()
            FROM pg_temp.{stage} s {settled}
            ON CONFLICT (id) DO UPDATE SET
                embedding = EXCLUDED.embedding, model = EXCLUDED.model, text_hash = EXCLUDED.text_hash,
                char_length = EXCLUDED.char_length, token_count = EXCLUDED.token_count,
                truncated = EXCLUDED.truncated, norm = EXCLUDED.norm, frequency = EXCLUDED.frequency,
                embedded_at = EXCLUDED.embedded_at
            """
        ).format(
            target=self._target.ident,
            id_type=sql.SQL(self._target.id_type),
            stage=_STAGE,
            settled=sql.SQL("WHERE s.id = ANY (%(settled)s::text[])" if seqs is not None else ""),
        )
        settle = self._settling(ids, seqs)
        self._session.run(lambda conn: self._copy_and_run(conn, _STAGE, stage_columns, staged, upsert, settle))

    def _settling(self, ids: Sequence[str], seqs: Sequence[int] | None) -> Callable[[Cursor], list[str]] | None:
        """What takes the queue entries of rows to write off the queue, in the writing transaction,
        and says which rows may be written."""
        if seqs is None:
            return None
        assert self._holder is not None, "rows from a change queue need the run's holder key"
        holder, queue = self._holder, self._target.queue
        return lambda cur: queue.settle(cur, holder, ids, seqs)

    def _insert_payload(self, ids: Sequence[str], columns: list[copybin.Column], metrics: TextMetrics) -> bytes | None:
        """The COPY payload of rows for the target itself, or None if this fast path cannot encode them."""
        id_column = copybin.ids(ids, self._target.id_type)
        if id_column is None or (metrics.token_count == UNKNOWN_TOKENS).any():
            return None  # an id type or a NULL this fast path does not encode
        return copybin.payload([*columns, copybin.constant_text(self._model, len(ids)), id_column])

    def _insert(self, conn: Connection, data: bytes) -> bool:
        """COPY rows straight into the target; False (and nothing written) if one of them is there already."""
        copy = sql.SQL(
            "COPY {target} (embedding, norm, frequency, text_hash, char_length, token_count, truncated, model, id) "
            "FROM STDIN (FORMAT binary)"
        ).format(target=self._target.ident)
        # One COPY is atomic on its own: run outside a transaction block, it saves
        # the BEGIN and COMMIT round trips (half the batch's time from a distant database).
        try:
            with autocommitting(conn), conn.cursor() as cur:
                cur.copy_expert(copy, io.BytesIO(data), size=len(data))
        except psycopg2.errors.UniqueViolation:
            return False  # a row appeared since it was read (another ingestor, a retried COPY): upsert
        return True

    def write_metrics(self, ids: Sequence[str], text_hashes: Sequence[str] | np.ndarray, metrics: TextMetrics) -> None:
        """Update metrics of rows already embedded (norm recomputed from the stored vector)."""
        data = copybin.payload([*_metric_columns(text_hashes, metrics), copybin.text(ids)])
        update = sql.SQL(
            """
            UPDATE {target} AS t SET
                char_length = s.char_length,
                token_count = NULLIF(s.token_count, %(unknown)s),
                truncated = {truncated},
                norm = vector_norm(t.embedding::vector)  -- the cast: halfvec has no vector_norm
            FROM pg_temp.{stage} s
            WHERE t.id = CAST(s.id AS {id_type}) AND t.text_hash = s.text_hash AND t.model = %(model)s
            """
        ).format(
            target=self._target.ident,
            id_type=sql.SQL(self._target.id_type),
            stage=_METRICS_STAGE,
            # A chunk is never cut: each is within the model's window.
            truncated=sql.SQL(
                "false"
                if self._target.chunked
                else "CASE WHEN s.token_count = %(unknown)s THEN NULL ELSE s.truncated END"
            ),
        )
        self._session.run(lambda conn: self._copy_and_run(conn, _METRICS_STAGE, _METRIC_STAGE_COLUMNS, data, update))

    def record_failures(
        self,
        ids: Sequence[str],
        text_hashes: Sequence[str],
        errors: Sequence[str],
        *,
        then: Callable[[Connection, Sequence[str]], None] | None = None,
    ) -> None:
        """Note rows whose text failed to embed: one more attempt for the same text, a first for a new one.

        ``then(conn, text_hashes)`` runs in the same transaction: the run gives
        up its claims on these texts there (``sharing.Sharing.release_texts``),
        so other runs waiting for their vectors try them themselves.

        (A retried unit can count one attempt twice; the bound on attempts stays a bound.)
        """
        upsert = sql.SQL(
            """
            INSERT INTO {errors} AS e (id, text_hash, error, attempts)
            SELECT CAST(f.id AS {id_type}), f.text_hash, f.error, 1
            FROM unnest(%(ids)s::text[], %(hashes)s::text[], %(errors)s::text[]) AS f(id, text_hash, error)
            ON CONFLICT (id) DO UPDATE SET
                attempts = CASE WHEN e.text_hash = EXCLUDED.text_hash THEN e.attempts + 1 ELSE 1 END,
                first_failed_at = CASE WHEN e.text_hash = EXCLUDED.text_hash THEN e.first_failed_at ELSE now() END,
                text_hash = EXCLUDED.text_hash, error = EXCLUDED.error, failed_at = now()
            """
        ).format(errors=self._target.errors.ident, id_type=sql.SQL(self._target.id_type))
        parameters = {"ids": list(ids), "hashes": list(text_hashes), "errors": list(errors)}

        def record(conn: Connection) -> None:
            with transaction(conn), conn.cursor() as cur:
                cur.execute(upsert, parameters)
                if self._holder is not None:  # tracked: a row a full pass failed on is found through the queue
                    self._target.queue.add(cur, ids)
                if then is not None:
                    then(conn, text_hashes)

        self._session.run(record)

    def _copy_and_run(
        self,
        conn: Connection,
        stage: sql.Identifier,
        columns: str,
        data: bytes,
        statements: sql.Composed | Sequence[sql.Composed],
        settle: Callable[[Cursor], list[str]] | None = None,
    ) -> None:
        """COPY ``data`` into the staging table ``stage``, then run ``statements`` on it: one
        transaction, in three round trips (see ``staging``)."""
        listed = [statements] if isinstance(statements, sql.Composed) else list(statements)
        parameters: dict[str, object] = {"model": self._model, "unknown": UNKNOWN_TOKENS}
        self._staging.apply(conn, stage, columns, data, listed, parameters, settle)


def _embedding_columns(
    target: TargetTable,
    vectors: np.ndarray,
    norms: np.ndarray,
    frequencies: np.ndarray,
    text_hashes: Sequence[str] | np.ndarray,
    metrics: TextMetrics,
) -> list[copybin.Column]:
    """The fixed-width columns of a stored row, in the order both write paths COPY them."""
    return [
        copybin.vector(vectors, target.vector_type),
        copybin.float4(norms),
        copybin.int4(frequencies),
        *_metric_columns(text_hashes, metrics),
    ]


def _metric_columns(text_hashes: Sequence[str] | np.ndarray, metrics: TextMetrics) -> list[copybin.Column]:
    return [
        copybin.fixed_text(text_hashes, 32),  # md5 hex digest
        copybin.int4(metrics.char_length),
        copybin.int4(metrics.token_count),
        copybin.boolean(metrics.truncated),
    ]
