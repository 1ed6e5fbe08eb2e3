"""The Ingestor: wires source, batches, encoder, sink and executor together."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

from embedlib.batching import Batch, PendingRow, is_blank, make_batches
from embedlib.config import DEFAULT_MODEL, Settings, env_dsn, env_workers
from embedlib.db import Connection, connect, ensure_vector_extension, resolve_dsn
from embedlib.encoder import Encoder, model_label, resolve_encoder
from embedlib.errors import ConfigError, SchemaError
from embedlib.executors import Executor, make_executor
from embedlib.metrics import IngestReport
from embedlib.schema import SourceTable, TargetTable, ensure_target, existing_target, inspect_source
from embedlib.sink import delete_embeddings, refresh_frequency
from embedlib.source import PendingReader, count_pending
from embedlib.worker import BatchWorker, WorkerSpec

log = logging.getLogger(__name__)


class Ingestor:
    """Embed every row of ``table`` that needs it and store vectors and metrics.

    >>> report = Ingestor(table="sentences", workers=2, executor="threaded").run()

    ``dsn`` defaults to ``EMBEDLIB_DSN``, then ``DATABASE_URL``, then the
    embedded server; ``workers`` to ``EMBED_WORKERS``, then 1. ``executor``
    is a name (``"serial"``, ``"threaded"``, or ``"auto"``: serial for one
    worker, threaded for more) or an Executor instance.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str,
        text_column: str = "text",
        id_column: str = "id",
        target: str | None = None,
        model: str | Encoder = DEFAULT_MODEL,
        batch_size: int = 100,
        executor: str | Executor = "auto",
        workers: int | None = None,
        window_size: int = 0,
        metrics_only: bool = False,
        progress: bool = False,
    ) -> None:
        if isinstance(executor, Executor):
            self.executor = executor
        else:
            self.executor = make_executor(executor, env_workers() if workers is None else workers)
        self.settings = Settings(
            table=table,
            dsn=dsn or env_dsn(),
            text_column=text_column,
            id_column=id_column,
            target=target,
            model=model,
            batch_size=batch_size,
            executor=self.executor.name,
            workers=self.executor.workers,
            window_size=window_size,
            metrics_only=metrics_only,
        )
        self.progress = progress

    def run(self, limit: int | None = None) -> IngestReport:
        """Process up to ``limit`` pending rows (all by default) and report what happened."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a whole number >= 1, got {limit!r}")
        started = time.perf_counter()
        s = self.settings
        dsn = resolve_dsn(s.dsn)
        conn = connect(dsn)
        try:
            source, target, label, pending = self._prepare(conn)
            setup_s = time.perf_counter() - started
            conn.autocommit = True  # reads need no transaction; each query sees the latest commits
            report = IngestReport(
                table=source.label,
                target=target.label,
                model=label,
                executor=self.executor.name,
                workers=self.executor.workers,
                batch_size=s.batch_size,
                metrics_only=s.metrics_only,
                setup_s=setup_s,
            )
            report.pending = pending if limit is None else min(pending, limit)
            reader = PendingReader(
                conn, source, target, label, window_size=s.window_size, limit=limit, metrics_only=s.metrics_only
            )
            spec = WorkerSpec(dsn=dsn, target=target, model=s.model, metrics_only=s.metrics_only)
            with _progress_bar(report.pending, enabled=self.progress) as bar:
                batches = self._batches(reader, conn, target, report, bar)
                for result in self.executor.map_unordered(functools.partial(BatchWorker, spec), batches):
                    report.add(result)
                    bar.update(result.rows + result.failed)
            refresh_started = time.perf_counter()
            refresh_frequency(conn, source, target)
            report.write_s += time.perf_counter() - refresh_started
            report.read_s = reader.seconds
        finally:
            conn.close()
        report.seconds = time.perf_counter() - started
        return report

    def _prepare(self, conn: Connection) -> tuple[SourceTable, TargetTable, str, int]:
        """Check everything before writing anything: source, model, then extension and target.

        Returns the tables, the model's label and the number of pending rows.
        The model is loaded only when there is work (a few seconds saved on
        every run over an up-to-date table): a missing or different model
        always finds work, since rows embedded by another model are pending.
        """
        s = self.settings
        source = inspect_source(conn, s.table, s.id_column, s.text_column)
        label = model_label(s.model)
        target = existing_target(conn, source, s.target)
        if s.metrics_only and target is None:
            raise SchemaError(f"table {s.target_table!r} does not exist yet: run ingest without --metrics-only")
        pending = None if target is None else count_pending(conn, source, target, label, metrics_only=s.metrics_only)
        if s.metrics_only:
            if pending:
                resolve_encoder(s.model)  # its tokenizer counts tokens
        elif pending is None or pending > 0:
            encoder = resolve_encoder(s.model)
            ensure_vector_extension(conn)
            target = ensure_target(conn, source, s.target, encoder.dimension)
        assert target is not None
        if pending is None:
            pending = count_pending(conn, source, target, label)
        conn.commit()
        return source, target, label, pending

    def _batches(
        self, reader: PendingReader, conn: Connection, target: TargetTable, report: IngestReport, bar: Any
    ) -> Iterator[Batch]:
        for window in reader:
            rows: list[PendingRow] = []
            blank_ids: list[str] = []
            for row in window:
                if is_blank(row.text):
                    blank_ids.append(row.id)
                else:
                    rows.append(row)
            report.skipped += len(blank_ids)
            if not self.settings.metrics_only:
                delete_embeddings(conn, target, blank_ids)
            bar.update(len(blank_ids))
            yield from make_batches(rows, self.settings.batch_size)


def _progress_bar(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
