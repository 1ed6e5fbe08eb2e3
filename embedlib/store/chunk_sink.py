"""Writing a chunked target: all of a row's chunks in one transaction, its old ones gone with it.

A row's chunks replace the ones it had (a shorter text has fewer), in the
transaction that writes them: a search never sees a document half old, half
new, and a run killed mid-batch leaves the rows it was writing as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from psycopg2 import sql

from embedlib.db import copybin
from embedlib.store.sink import Sink

_CHUNK_STAGE = sql.Identifier("embedlib_chunk_stage")


@dataclass(frozen=True)
class ChunkWrite:
    """The target rows of a batch, one per (source row, chunk), arrays of equal length."""

    ids: Sequence[str]
    chunk: np.ndarray
    start: np.ndarray
    end: np.ndarray
    chunk_hashes: Sequence[str]
    chunk_tokens: np.ndarray
    vectors: np.ndarray
    # The source row's own, repeated on each of its chunks:
    text_hashes: Sequence[str]
    char_length: np.ndarray
    token_count: np.ndarray
    frequencies: np.ndarray


class ChunkSink(Sink):
    def write_chunks(self, rows: ChunkWrite, *, row_ids: Sequence[str], seqs: Sequence[int] | None = None) -> None:
        """Replace the chunks of the source rows ``row_ids`` by ``rows``; ``seqs``: their change queue
        entries, as ``Sink.write_embeddings`` takes them (only rows still as read are written)."""
        target = self._target
        stored = rows.vectors.astype(np.float16).astype(np.float32) if target.vector_type == "halfvec" else rows.vectors
        data = copybin.payload(
            [
                copybin.vector(rows.vectors, target.vector_type),
                copybin.float4(np.linalg.norm(stored, axis=1)),
                copybin.int4(rows.frequencies),
                copybin.fixed_text(rows.text_hashes, 32),
                copybin.int4(rows.char_length),
                copybin.int4(rows.token_count),
                copybin.int4(rows.chunk),
                copybin.int4(rows.start),
                copybin.int4(rows.end),
                copybin.fixed_text(rows.chunk_hashes, 32),
                copybin.int4(rows.chunk_tokens),
                copybin.text(list(rows.ids)),
            ]
        )
        columns = (
            f"embedding {target.embedding_type}, norm float4, frequency int4, text_hash text, char_length int4, "
            "token_count int4, chunk int4, start_char int4, end_char int4, chunk_hash text, chunk_tokens int4, id text"
        )
        only = sql.SQL("WHERE s.id = ANY (%(settled)s::text[])" if seqs is not None else "")
        parts = {"target": target.ident, "id_type": sql.SQL(target.id_type), "stage": _CHUNK_STAGE, "only": only}
        remove = sql.SQL(
            "DELETE FROM {target} t WHERE t.id IN (SELECT CAST(s.id AS {id_type}) FROM pg_temp.{stage} s {only})"
        ).format(**parts)
        insert = sql.SQL(
            """
            INSERT INTO {target} AS t (id, chunk, start_char, end_char, chunk_hash, chunk_tokens, embedding, model,
                text_hash, char_length, token_count, truncated, norm, frequency, embedded_at)
            SELECT CAST(s.id AS {id_type}), s.chunk, s.start_char, s.end_char, s.chunk_hash, s.chunk_tokens,
                s.embedding, %(model)s, s.text_hash, s.char_length, NULLIF(s.token_count, %(unknown)s), false,
                s.norm, s.frequency, now()
            FROM pg_temp.{stage} s {only}
            ON CONFLICT (id, chunk) DO UPDATE SET
                start_char = EXCLUDED.start_char, end_char = EXCLUDED.end_char, chunk_hash = EXCLUDED.chunk_hash,
                chunk_tokens = EXCLUDED.chunk_tokens, embedding = EXCLUDED.embedding, model = EXCLUDED.model,
                text_hash = EXCLUDED.text_hash, char_length = EXCLUDED.char_length,
                token_count = EXCLUDED.token_count, truncated = EXCLUDED.truncated, norm = EXCLUDED.norm,
                frequency = EXCLUDED.frequency, embedded_at = EXCLUDED.embedded_at
            """
        ).format(**parts)
        settle = self._settling(row_ids, seqs)
        self._session.run(lambda conn: self._copy_and_run(conn, _CHUNK_STAGE, columns, data, [remove, insert], settle))
