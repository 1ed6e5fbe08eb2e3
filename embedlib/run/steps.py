"""The two steps every batch goes through: encode it, then write it.

``EncodeStep`` is built from an ``EncodeSpec``, plain picklable data with no
database in it, so an executor may run it in threads, child processes or Ray
actors alike (names load once per process, so threads share one model).
``WriteStep`` runs in the driver process only: it holds the run's connection
for writing, and what the DSN holds never leaves the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedlib.db.session import Connection
from embedlib.encode.base import Encoder, resolve_encoder
from embedlib.encode.failures import isolate_failures, unstorable_rows
from embedlib.encode.tokens import TokenIds
from embedlib.errors import EncoderUnavailable
from embedlib.plan.batching import Batch, budget_slices, encode_cost
from embedlib.redaction import get_logger
from embedlib.run.report import BatchResult
from embedlib.store.chunk_sink import ChunkSink, ChunkWrite
from embedlib.store.metrics import TextMetrics
from embedlib.store.sink import Sink

log = get_logger(__name__)


@dataclass(frozen=True)
class EncodeSpec:
    model: Any  # a model name, path or service URL, or an Encoder object
    dimension: int  # of the target's vectors
    vector_type: str  # the target's (see options.VECTOR_TYPES): some vectors cannot be stored in it
    metrics_only: bool = False
    # A token budget per encode call (see batching.budget_slices); 0: one call a batch; None: the
    # encoder's own ``call_tokens`` (sized for the model and device), else one call a batch.
    batch_tokens: int | None = None
    device: str = "auto"  # see rules.Device; for a local model
    precision: str = "fp32"


@dataclass(frozen=True)
class EncodedBatch:
    """A batch between its two steps: its vectors, one per distinct text (None in metrics-only mode)."""

    batch: Batch
    vectors: np.ndarray | None
    encoded: int  # texts run through the model
    encode_s: float
    # Texts the model failed on, or whose vectors cannot be stored, by position: why.
    errors: dict[int, str] = field(default_factory=dict)


class EncodeStep:
    """Vectors for a batch, unless they are reused or not wanted. Thread-safe."""

    def __init__(self, spec: EncodeSpec) -> None:
        self._spec = spec
        self._encoder = resolve_encoder(spec.model, device=spec.device, precision=spec.precision)
        budget = spec.batch_tokens
        if budget is None:  # the encoder's own; one that has none (a service, which batches itself) gets a call a batch
            budget = int(getattr(self._encoder, "call_tokens", 0))
        self._budget = budget
        self._model_worked = False  # has a call to the model succeeded yet (see failures.isolate_failures)

    def __call__(self, batch: Batch) -> EncodedBatch:
        started = time.perf_counter()
        encoded = 0
        vectors = None
        errors: dict[int, str] = {}
        if batch.chunks is not None and not batch.texts:
            vectors = np.zeros((0, self._spec.dimension), dtype=np.float32)  # every chunk is stored already
        elif batch.vectors is not None:
            vectors = batch.vectors  # stored for the same text by the same model: reused
        elif not self._spec.metrics_only:
            encoded = len(batch.texts)
            vectors, errors = isolate_failures(
                lambda start, stop: self._encode_within_budget(batch, start, stop),
                len(batch.texts),
                self._spec.dimension,
                worked_before=self._model_worked,
            )
        if vectors is not None:  # a vector that cannot be stored fails its text like an error does
            for position, reason in unstorable_rows(vectors, self._spec.vector_type).items():
                errors.setdefault(position, reason)
        if encoded:
            if len(errors) == encoded > 1 and not self._model_worked:
                # Not one usable vector from a model that never gave one: the model is broken (a
                # service answering zeros, say), not every row of the table. Stop, as isolate_failures does.
                raise EncoderUnavailable(
                    f"encoder {self._encoder.name!r} gave no usable vector for a batch of {encoded} "
                    f"texts (first: {next(iter(errors.values()))})"
                )
            self._model_worked = self._model_worked or len(errors) < encoded
        return EncodedBatch(batch, vectors, encoded, time.perf_counter() - started, errors)

    def _encode_within_budget(self, batch: Batch, start: int, stop: int) -> np.ndarray:
        """Vectors of ``batch.texts[start:stop]``, in calls to the model of at most ``batch_tokens`` tokens."""
        texts = batch.texts[start:stop]
        tokens = batch.tokens.slice(start, stop) if batch.tokens is not None else None
        if not self._budget:
            parts = [self._encode(texts, tokens)]
        else:
            max_tokens = getattr(self._encoder, "max_tokens", None)
            counts = batch.token_counts[start:stop] if batch.token_counts is not None else [None] * len(texts)
            costs = [encode_cost(text, count, max_tokens) for text, count in zip(texts, counts, strict=True)]
            parts = [
                self._encode(texts[part], None if tokens is None else tokens.slice(part.start, part.stop))
                for part in budget_slices(costs, self._budget)
            ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _encode(self, texts: list[str], tokens: TokenIds | None) -> np.ndarray:
        """Vectors of ``texts``: from their ``tokens`` where the planner made them for this encoder."""
        if tokens is not None and getattr(self._encoder, "tokenize", None) is not None:
            vectors = np.asarray(self._encoder.encode_tokens(tokens))  # type: ignore[attr-defined]
        else:
            vectors = np.asarray(self._encoder.encode(texts))
        if vectors.shape != (len(texts), self._spec.dimension):
            # The encoder is at fault, not these texts (its dimension changed mid-run, say): the
            # run stops rather than filing every row as failed (see failures.isolate_failures).
            raise EncoderUnavailable(
                f"encoder {self._encoder.name!r} returned vectors of shape {vectors.shape} for "
                f"{len(texts)} texts; the target holds {self._spec.dimension}-dimensional ones"
            )
        return vectors

    def close(self) -> None:
        pass  # the model stays loaded for the process's next run


class WriteStep:
    """Metrics (counting tokens is done here, off the model's path), then one transaction a batch.

    ``on_failed(conn, text_hashes)`` runs in the transaction that records
    texts that failed (see ``sink.Sink.record_failures``).
    """

    def __init__(
        self,
        sink: Sink,
        encoder: Encoder | None,
        *,
        errors_label: str,
        on_failed: Callable[[Connection, Sequence[str]], None] | None = None,
        on_written: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        """``on_written(text_hashes)`` is told of the texts of each batch (not chunked) once written."""
        self._on_written = on_written
        self._sink = sink
        self._encoder = encoder  # for counting tokens the planner did not count; None: no tokenizer
        self._errors_label = errors_label
        self._on_failed = on_failed

    def __call__(self, encoded: EncodedBatch) -> BatchResult:
        if encoded.batch.chunks is not None:
            return self._write_chunks(encoded)
        started = time.perf_counter()
        batch, vectors = encoded.batch, encoded.vectors
        metrics = TextMetrics.of(self._encoder, batch.texts, batch.token_counts)
        errors = encoded.errors  # texts the model failed on, or whose vectors cannot be stored
        # Expand per-text results to per-row, leaving out the rows of texts that failed.
        keep = np.ones(len(batch.texts), dtype=bool)
        keep[list(errors)] = False
        row_keep = keep[batch.text_index]
        failed = int((~row_keep).sum())
        if failed:
            self._record_failures(batch, row_keep, errors)
        index = batch.text_index[row_keep]
        ids = batch.ids if not failed else [row_id for row_id, kept in zip(batch.ids, row_keep, strict=True) if kept]
        # The queue entries of rows that failed stay: a later run tries them again.
        seqs = batch.seqs if not failed or batch.seqs is None else np.asarray(batch.seqs)[row_keep].tolist()
        hashes = np.array(batch.text_hashes, dtype="S32")[index]  # md5 hex digests, one per row
        row_metrics = metrics.take(index)
        reconnects_before, trips_before = self._sink.reconnects, self._sink.round_trips
        if ids and vectors is None:
            self._sink.write_metrics(ids, hashes, row_metrics)
        elif ids and vectors is not None:
            self._sink.write_embeddings(
                ids, hashes, vectors[index], row_metrics, batch.frequencies[index], new_rows=batch.new_rows, seqs=seqs
            )
        if self._on_written is not None:
            self._on_written(batch.text_hashes)
        return BatchResult(
            rows=len(ids),
            encoded=encoded.encoded,
            failed=failed,
            truncated=0 if isinstance(self._sink, ChunkSink) else int(row_metrics.truncated.sum()),  # chunks fit
            encode_s=encoded.encode_s,
            write_s=time.perf_counter() - started,
            reconnects=self._sink.reconnects - reconnects_before,
            round_trips=self._sink.round_trips - trips_before,
        )

    def _write_chunks(self, encoded: EncodedBatch) -> BatchResult:
        """A chunked batch: a source row whose chunk failed fails whole; the others' chunks are written."""
        started = time.perf_counter()
        batch, chunks = encoded.batch, encoded.batch.chunks
        assert chunks is not None and batch.documents is not None and batch.document_tokens is not None
        encoded_rows = chunks.text_index >= 0
        failed_chunk = np.zeros(len(chunks), dtype=bool)
        failed_chunk[encoded_rows] = np.isin(chunks.text_index[encoded_rows], list(encoded.errors))
        row_keep = np.ones(len(batch.ids), dtype=bool)
        row_keep[chunks.row[failed_chunk]] = False
        if not row_keep.all():
            reasons = {
                int(r): encoded.errors[int(t)]
                for r, t in zip(chunks.row[failed_chunk], chunks.text_index[failed_chunk], strict=True)
            }
            self._record_chunk_failures(batch, reasons)
        keep = row_keep[chunks.row]
        dimension = (
            encoded.vectors.shape[1] if encoded.vectors is not None and encoded.vectors.size else chunks.reused.shape[1]
        )
        vectors = np.zeros((len(chunks), dimension), dtype=np.float32)
        if encoded.vectors is not None and encoded_rows.any():
            vectors[encoded_rows] = encoded.vectors[chunks.text_index[encoded_rows]]
        if not encoded_rows.all():
            vectors[~encoded_rows] = chunks.reused[chunks.reuse_index[~encoded_rows]]
        document = batch.text_index[chunks.row]  # each chunk row's source row's document
        rows = ChunkWrite(
            ids=[row_id for row_id, kept in zip(chunks.ids, keep, strict=True) if kept],
            chunk=chunks.chunk[keep],
            start=chunks.start[keep],
            end=chunks.end[keep],
            chunk_hashes=[h for h, kept in zip(chunks.chunk_hash, keep, strict=True) if kept],
            chunk_tokens=chunks.chunk_tokens[keep],
            vectors=vectors[keep],
            text_hashes=[batch.text_hashes[d] for d in document[keep]],
            char_length=np.array([len(batch.documents[d]) for d in document[keep]], dtype=np.int64),
            token_count=batch.document_tokens[document[keep]],
            frequencies=batch.frequencies[document[keep]],
        )
        row_ids = [row_id for row_id, kept in zip(batch.ids, row_keep, strict=True) if kept]
        seqs = None if batch.seqs is None else np.asarray(batch.seqs)[row_keep].tolist()
        reconnects_before, trips_before = self._sink.reconnects, self._sink.round_trips
        if row_ids:
            assert isinstance(self._sink, ChunkSink)
            self._sink.write_chunks(rows, row_ids=row_ids, seqs=seqs)
        return BatchResult(
            rows=len(row_ids),
            encoded=encoded.encoded,
            failed=int((~row_keep).sum()),
            encode_s=encoded.encode_s,
            write_s=time.perf_counter() - started,
            reconnects=self._sink.reconnects - reconnects_before,
            round_trips=self._sink.round_trips - trips_before,
        )

    def _record_chunk_failures(self, batch: Batch, reasons: dict[int, str]) -> None:
        """Note the source rows (by position in ``batch``) a chunk of which failed, with why."""
        rows = sorted(reasons)
        ids = [batch.ids[row] for row in rows]
        hashes = [batch.text_hashes[batch.text_index[row]] for row in rows]
        # What other runs wait on are the chunks' claims (a chunked batch claims chunks, not texts).
        assert batch.chunks is not None
        failed = np.isin(batch.chunks.row, rows)
        chunk_hashes = sorted({h for h, f in zip(batch.chunks.chunk_hash, failed, strict=True) if f})
        on_failed = self._on_failed
        then = None if on_failed is None else (lambda conn, _: on_failed(conn, chunk_hashes))
        self._sink.record_failures(ids, hashes, [reasons[row] for row in rows], then=then)
        log.warning(
            "%d rows failed to embed and were recorded in %s (first: %s)",
            len(ids),
            self._errors_label,
            reasons[rows[0]],
        )

    def _record_failures(self, batch: Batch, row_keep: np.ndarray, errors: dict[int, str]) -> None:
        failed_rows = np.flatnonzero(~row_keep)
        positions = batch.text_index[failed_rows]
        ids = [batch.ids[row] for row in failed_rows]
        hashes = [batch.text_hashes[p] for p in positions]
        self._sink.record_failures(ids, hashes, [errors[p] for p in positions], then=self._on_failed)
        log.warning(
            "%d rows failed to embed and were recorded in %s (first: %s)",
            len(ids),
            self._errors_label,
            errors[positions[0]],
        )

    def close(self) -> None:
        self._sink.close()
