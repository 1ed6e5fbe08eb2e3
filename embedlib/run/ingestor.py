"""The Ingestor: wires source, planner, the encode and write steps, and the executor together."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, Session, check_connection_room, connect, resolve_dsn, server_time
from embedlib.encode.base import Encoder, encodes_concurrently, resolve_encoder
from embedlib.errors import ConfigError, EmbedlibError, SchemaError
from embedlib.options import AUTO, Settings
from embedlib.plan.planner import PlanOptions
from embedlib.query.index import IndexReport, build_index
from embedlib.query.search import Match, nearest
from embedlib.query.status import Status, status
from embedlib.redaction import get_logger
from embedlib.rules import Whole
from embedlib.run.executors import Executor, Stages, make_executor
from embedlib.run.follow import follow
from embedlib.run.passes import Passes
from embedlib.run.prepare import Prepared, prepare
from embedlib.run.report import BatchResult, IngestReport
from embedlib.run.steps import EncodeSpec, EncodeStep, WriteStep
from embedlib.source.reader import Retries, count_given_up, duplicate_counts
from embedlib.source.sharing import Sharing
from embedlib.source.tables import inspect_source
from embedlib.store.provenance import served_target
from embedlib.store.sink import Sink
from embedlib.store.upkeep import clear_resolved_errors, refresh_frequency, remove_orphans, skip_blank

log = get_logger(__name__)


class Ingestor:
    """Embed every row of ``table`` that needs it and store vectors and metrics.

    >>> report = Ingestor(table="sentences").run()

    ``options`` are the fields of ``options.Settings`` (``batch_size``,
    ``model``, ``workers``, ``reconnect_s``, ``dtype``, ...), each documented
    there and in docs/guide.md; an unknown one is refused. ``dsn`` defaults to
    ``EMBEDLIB_DSN``, then ``DATABASE_URL``, then the embedded server.
    ``executor`` is a name from ``run.executors.EXECUTORS`` (``"auto"`` is the
    pipelined one) or an Executor instance, which stays the caller's (a
    process pool kept warm between runs, say); one made by name is shut down
    after each run.
    """

    def __init__(self, dsn: str | None = None, *, table: str, executor: str | Executor = AUTO, **options: Any) -> None:
        if not isinstance(executor, (str, Executor)):
            raise ConfigError(f"executor must be a name or an Executor, got {executor!r}", option="executor")
        named = executor if isinstance(executor, str) else executor.name
        self.settings = s = Settings.resolve(dsn=dsn, table=table, executor=named, **options)
        self._owns_executor = not isinstance(executor, Executor)
        if isinstance(executor, Executor):
            if s.autoscale:
                raise ConfigError(
                    "autoscale is for executors made by name; pass ThreadedExecutor(n, autoscale=True)",
                    option="autoscale",
                )
            self.executor = executor
        else:
            self.executor = make_executor(
                s.executor,
                s.workers,
                concurrent_encoder=encodes_concurrently(s.model),
                autoscale=s.autoscale,
                ray_address=s.ray_address,
            )
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the run under way to stop: batches under way are finished and committed, no new
        one starts, and ``run()`` returns its report with ``stopped`` set. Safe to call from a
        signal handler or another thread; what is left is pending for the next run."""
        self._stop.set()

    def run(self, limit: int | None = None) -> IngestReport:
        """Process up to ``limit`` pending rows (all by default) and report what happened."""
        if limit is not None:
            Whole(1).check("limit", limit)
        try:
            return self._run_once(limit)
        finally:
            self._stop.clear()  # the next run starts afresh
            if self._owns_executor:
                self.executor.shutdown()

    def follow(self, on_cycle: Callable[[IngestReport], None] | None = None) -> IngestReport:
        """Embed what is pending, then keep the table in step: look again every ``poll_interval_s``
        and embed what changed (inserts, updates, deletes), with the model loaded, until ``stop()``.
        ``on_cycle`` is given the report of every run that did something. Returns the sum of them."""
        try:
            return follow(lambda: self._run_once(None), self._stop, self.settings.poll_interval_s, on_cycle)
        finally:
            self._stop.clear()
            if self._owns_executor:
                self.executor.shutdown()

    def _run_once(self, limit: int | None) -> IngestReport:
        started = time.perf_counter()
        s = self.settings
        dsn = resolve_dsn(s.dsn)
        sharing = Sharing()  # this run's place among the ingestors sharing the table
        # Reads need no transaction (autocommit): each query sees the latest commits.
        session = Session(dsn, autocommit=True, reconnect_s=s.reconnect_s, on_connect=sharing.hold)
        shared = False
        try:
            # One connection reads, and each writer holds one for the whole run.
            session.run(lambda conn: check_connection_room(conn, self.executor.workers))
            retries = Retries(s.max_attempts, session.run(server_time))
            prepared = session.run(lambda conn: prepare(conn, s, retries))
            sharing.start(prepared.source, prepared.target, prepared.model_key)
            shared = True
            report = self._new_report(prepared, limit, setup_s=time.perf_counter() - started)
            report.given_up = session.run(lambda conn: count_given_up(conn, prepared.source, prepared.target, retries))
            self._run_passes(dsn, session, prepared, sharing, retries, report, limit)
            if self.settings.index and not report.stopped:
                report.index = self._build_index(dsn, prepared.target, self.settings.index, s.metric).name
        finally:
            if shared:
                with contextlib.suppress(EmbedlibError, psycopg2.Error):  # gone with the connection anyway
                    session.run(sharing.release)
            session.close()
        report.seconds = time.perf_counter() - started
        return report

    def _new_report(self, prepared: Prepared, limit: int | None, *, setup_s: float) -> IngestReport:
        if prepared.null_ids:
            log.warning(
                "%d rows of %s have a NULL %r and are left out: embedlib keys vectors by it; give them ids",
                prepared.null_ids, prepared.source.label, prepared.source.id_column,
            )  # fmt: skip
        report = IngestReport(
            table=prepared.source.label,
            target=prepared.target.label,
            model=prepared.model_key,
            executor=self.executor.name,
            workers=self.executor.workers,
            batch_size=self.settings.batch_size,
            metrics_only=self.settings.metrics_only,
            setup_s=setup_s,
        )
        report.pending = prepared.pending if limit is None else min(prepared.pending, limit)
        report.null_ids = prepared.null_ids
        return report

    def _run_passes(
        self,
        dsn: str,
        session: Session,
        prepared: Prepared,
        sharing: Sharing,
        retries: Retries,
        report: IngestReport,
        limit: int | None,
    ) -> None:
        """Every pass over the source, then what the run leaves in order behind it."""
        s, target = self.settings, prepared.target
        duplicates = session.run(lambda conn: duplicate_counts(conn, prepared.source))
        encoder = resolve_encoder(s.model) if prepared.to_encode else None  # loaded already if so
        options = PlanOptions(
            batch_size=s.batch_size,
            max_tokens=getattr(encoder, "max_tokens", None),
            count_tokens=getattr(encoder, "count_tokens", None),
            metrics_only=s.metrics_only,
        )
        spec = EncodeSpec(s.model, target.dimension, target.vector_type, s.metrics_only, s.batch_tokens)
        stages: Stages[Any, Any, BatchResult] = Stages(
            compute=functools.partial(EncodeStep, spec),  # no DSN: it may be sent to processes or actors
            finish=functools.partial(_writer, dsn, target, prepared.model_key, s.reconnect_s, encoder, sharing),
        )

        def on_blank(ids: list[str], hashes: list[str]) -> None:
            session.run(lambda conn: skip_blank(conn, target, ids, hashes))

        removal_s: list[float] = []  # on the reader's thread: added to the report after the passes

        def on_covered(after: str | None, last: str | None) -> None:
            started = time.perf_counter()
            report.removed += session.run(lambda conn: remove_orphans(conn, prepared.source, target, after, last))
            removal_s.append(time.perf_counter() - started)

        with _progress_bar(report.pending, enabled=s.progress and report.pending > 0) as bar:
            passes = Passes(
                settings=s,
                session=session,
                prepared=prepared,
                sharing=sharing,
                retries=retries,
                duplicates=duplicates,
                executor=self.executor,
                stages=stages,
                on_blank=on_blank,
                on_covered=on_covered,
                report=report,
                stop=self._stop,
                bar=bar,
            )
            passes.run(options, limit)
        report.write_s += sum(removal_s)
        refresh_started = time.perf_counter()
        session.run(lambda conn: refresh_frequency(conn, target, duplicates))
        session.run(lambda conn: clear_resolved_errors(conn, target))
        report.write_s += time.perf_counter() - refresh_started
        report.reconnects += session.reconnects
        report.stopped = self._stop.is_set()

    def search(self, query: str, k: int = 10, *, metric: str | None = None) -> list[Match]:
        """The ``k`` rows nearest to ``query``, closest first: (id, text, distance).

        The query is embedded by this Ingestor's model, and only its vectors are
        searched (a target holding another model's vectors is refused).
        ``metric`` defaults to the one given for the index.
        """
        conn = connect(resolve_dsn(self.settings.dsn), autocommit=True)
        try:
            source, target = self._embedded_tables(conn)
            return nearest(conn, source, target, self.settings.model, query, k, metric or self.settings.metric)
        finally:
            conn.close()

    def status(self) -> Status:
        """Where the table stands for this Ingestor's model: rows embedded, pending, given up,
        vectors of deleted rows, runs working on it now. Reads only; loads no model."""
        s = self.settings
        conn = connect(resolve_dsn(s.dsn), autocommit=True)
        try:
            source = inspect_source(conn, s.table, s.id_column, s.text_column)
            return status(conn, source, s.target, s.model, s.max_attempts)
        finally:
            conn.close()

    def build_index(self, method: str | None = None, metric: str | None = None) -> IndexReport:
        """Build a pgvector index on the stored vectors now (``index`` and ``metric`` by default,
        else HNSW and cosine), with a progress bar if asked for; an existing one is reported as is."""
        dsn = resolve_dsn(self.settings.dsn)
        conn = connect(dsn, autocommit=True)
        try:
            _, target = self._embedded_tables(conn)
        finally:
            conn.close()
        method = method or self.settings.index or "hnsw"
        return self._build_index(dsn, target, method, metric or self.settings.metric)

    def _embedded_tables(self, conn: Connection) -> tuple[SourceTable, TargetTable]:
        """The source and its target, which must exist: search and index need stored vectors."""
        s = self.settings
        source = inspect_source(conn, s.table, s.id_column, s.text_column)
        target = served_target(conn, source, s.target)
        if target is None:
            raise SchemaError(f"table {s.target_table!r} does not exist yet: run embedlib ingest first")
        return source, target

    def _build_index(self, dsn: str, target: TargetTable, method: str, metric: str) -> IndexReport:
        from tqdm import tqdm

        with tqdm(total=0, unit="row", desc=f"{method} index", disable=not self.settings.progress, leave=False) as bar:

            def show(phase: str, done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.set_postfix_str(phase, refresh=True)

            return build_index(dsn, target, method=method, metric=metric, on_progress=show)


def _writer(
    dsn: str, target: TargetTable, model_key: str, reconnect_s: float, encoder: Encoder | None, sharing: Sharing
) -> WriteStep:
    """A writer thread's step, with its own connection (made here, in the thread, at its first batch)."""
    sink = Sink(dsn, target, model_key, reconnect_s=reconnect_s)
    return WriteStep(sink, encoder, errors_label=target.errors.label, on_failed=sharing.release_texts)


def _progress_bar(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


__all__: Sequence[str] = ["Ingestor"]
