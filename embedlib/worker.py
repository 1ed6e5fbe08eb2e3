"""The unit of work an executor runs: encode one batch and write it.

A worker owns one database connection and uses its process's encoder
(names load once per process, so threads share one model). It is built
from a ``WorkerSpec``, which is plain picklable data, so an executor can
build workers in threads or in other processes alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlib.batching import Batch
from embedlib.db import connect
from embedlib.encoder import model_label, resolve_encoder
from embedlib.metrics import TextMetrics
from embedlib.schema import TargetTable
from embedlib.sink import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    dsn: str
    target: TargetTable
    model: Any  # a model name or path, or an Encoder object
    metrics_only: bool = False


@dataclass(frozen=True)
class BatchResult:
    rows: int  # rows written
    encoded: int  # texts run through the model
    failed: int  # rows not written because their vector was not finite
    encode_s: float
    write_s: float


class BatchWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._encoder = resolve_encoder(spec.model)
        self._conn = connect(spec.dsn)
        self._sink = Sink(self._conn, spec.target, model_label(spec.model))

    def __call__(self, batch: Batch) -> BatchResult:
        started = time.perf_counter()
        metrics = TextMetrics.of(self._encoder, batch.texts)
        if self._spec.metrics_only:
            encoded = 0
            vectors = None
        else:
            encoded = len(batch.texts)
            vectors = self._encoder.encode(batch.texts)
            if vectors.shape != (len(batch.texts), self._spec.target.dimension):
                raise ValueError(
                    f"encoder returned shape {vectors.shape} for {len(batch.texts)} texts, "
                    f"expected (n, {self._spec.target.dimension})"
                )
        encoded_at = time.perf_counter()

        # Expand per-text results to per-row, dropping texts whose vector is not finite.
        keep = np.ones(len(batch.texts), dtype=bool) if vectors is None else np.isfinite(vectors).all(axis=1)
        row_keep = keep[batch.text_index]
        failed = int((~row_keep).sum())
        if failed:
            log.warning("%d rows got a non-finite vector and were not stored", failed)
        index = batch.text_index[row_keep]
        ids = [row_id for row_id, kept in zip(batch.ids, row_keep, strict=True) if kept]
        hashes = [batch.text_hashes[i] for i in index]
        row_metrics = metrics.take(index)
        if ids:
            if vectors is None:
                self._sink.write_metrics(ids, hashes, row_metrics)
            else:
                self._sink.write_embeddings(ids, hashes, vectors[index], row_metrics)
        return BatchResult(
            rows=len(ids),
            encoded=encoded,
            failed=failed,
            encode_s=encoded_at - started,
            write_s=time.perf_counter() - encoded_at,
        )

    def close(self) -> None:
        self._conn.close()
