"""The unit of work an executor runs: encode one batch and write it.

A worker owns one database connection and uses its process's encoder
(names load once per process, so threads share one model). It is built
from a ``WorkerSpec``, which is plain picklable data, so an executor can
build workers in threads or in other processes alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedlib.db.relations import TargetTable
from embedlib.db.session import DEFAULT_RECONNECT_S
from embedlib.encode.base import resolve_encoder
from embedlib.encode.failures import isolate_failures, unstorable_rows
from embedlib.errors import EncoderUnavailable
from embedlib.plan.batching import Batch, budget_slices, encode_cost
from embedlib.redaction import get_logger
from embedlib.store.metrics import TextMetrics
from embedlib.store.sink import Sink

log = get_logger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    dsn: str
    target: TargetTable
    model: Any  # a model name or path, or an Encoder object
    metrics_only: bool = False
    batch_tokens: int = 0  # a token budget per encode call (see batching.budget_slices); 0: one call a batch
    reconnect_s: float = DEFAULT_RECONNECT_S  # how long a lost connection is retried (see db.Session)
    holder: int | None = None  # the run's key among ingestors sharing the table (see claims)
    model_key: str = ""  # the name the model's vectors are stored under (see provenance.model_key)


@dataclass(frozen=True)
class BatchResult:
    rows: int  # rows written
    encoded: int  # texts run through the model
    failed: int  # rows not written because their text failed to embed (see failures)
    encode_s: float
    write_s: float
    reconnects: int = 0  # connections lost and made again while writing it


@dataclass(frozen=True)
class EncodedBatch:
    """A batch between its two halves: its vectors, one per distinct text (None in metrics-only mode)."""

    batch: Batch
    vectors: np.ndarray | None
    encoded: int  # texts run through the model
    encode_s: float
    # Texts the model failed on, or whose vectors cannot be stored, by position: why.
    errors: dict[int, str] = field(default_factory=dict)


class BatchWorker:
    """Encodes and writes batches; ``encode`` and ``write`` can also run apart (see the pipelined executor)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._encoder = resolve_encoder(spec.model)
        self._sink: Sink | None = None  # connected at the first write: a worker that only encodes needs none
        self._model_worked = False  # has a call to the model succeeded yet (see failures.isolate_failures)

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            spec = self._spec
            self._sink = Sink(spec.dsn, spec.target, spec.model_key, reconnect_s=spec.reconnect_s)
        return self._sink

    def __call__(self, batch: Batch) -> BatchResult:
        return self.write(self.encode(batch))

    def encode(self, batch: Batch) -> EncodedBatch:
        """The model's half: vectors, unless they are reused or not wanted. Thread-safe."""
        started = time.perf_counter()
        encoded = 0
        vectors = None
        errors: dict[int, str] = {}
        if batch.vectors is not None:
            vectors = batch.vectors  # stored for the same text by the same model: reused
        elif not self._spec.metrics_only:
            encoded = len(batch.texts)
            vectors, errors = isolate_failures(
                lambda start, stop: self._encode_within_budget(batch, start, stop),
                len(batch.texts),
                self._spec.target.dimension,
                worked_before=self._model_worked,
            )
        if vectors is not None:  # a vector that cannot be stored fails its text like an error does
            for position, reason in unstorable_rows(vectors, self._spec.target.vector_type).items():
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
        if not self._spec.batch_tokens:
            parts = [self._encode(texts)]
        else:
            max_tokens = getattr(self._encoder, "max_tokens", None)
            counts = batch.token_counts[start:stop] if batch.token_counts is not None else [None] * len(texts)
            costs = [encode_cost(text, count, max_tokens) for text, count in zip(texts, counts, strict=True)]
            parts = [self._encode(texts[part]) for part in budget_slices(costs, self._spec.batch_tokens)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self._encoder.encode(texts))
        if vectors.shape != (len(texts), self._spec.target.dimension):
            # The encoder is at fault, not these texts (its dimension changed mid-run, say): the
            # run stops rather than filing every row as failed (see failures.isolate_failures).
            raise EncoderUnavailable(
                f"encoder {self._encoder.name!r} returned vectors of shape {vectors.shape} for "
                f"{len(texts)} texts; the target holds {self._spec.target.dimension}-dimensional ones"
            )
        return vectors

    def write(self, encoded: EncodedBatch) -> BatchResult:
        """The rest: metrics (counting tokens is done here, off the model's path), then one transaction."""
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
        hashes = np.array(batch.text_hashes, dtype="S32")[index]  # md5 hex digests, one per row
        row_metrics = metrics.take(index)
        reconnects_before = self.sink.reconnects if ids else 0
        if ids:
            if vectors is None:
                self.sink.write_metrics(ids, hashes, row_metrics)
            else:
                self.sink.write_embeddings(
                    ids, hashes, vectors[index], row_metrics, batch.frequencies[index], new_rows=batch.new_rows
                )
        return BatchResult(
            rows=len(ids),
            encoded=encoded.encoded,
            failed=failed,
            encode_s=encoded.encode_s,
            write_s=time.perf_counter() - started,
            reconnects=self.sink.reconnects - reconnects_before if ids else 0,
        )

    def _record_failures(self, batch: Batch, row_keep: np.ndarray, errors: dict[int, str]) -> None:
        failed_rows = np.flatnonzero(~row_keep)
        positions = batch.text_index[failed_rows]
        ids = [batch.ids[row] for row in failed_rows]
        hashes = [batch.text_hashes[p] for p in positions]
        self.sink.record_failures(ids, hashes, [errors[p] for p in positions], holder=self._spec.holder)
        log.warning(
            "%d rows failed to embed and were recorded in %s (first: %s)",
            len(ids),
            self._spec.target.errors.label,
            errors[positions[0]],
        )

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
