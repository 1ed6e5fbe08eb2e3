"""The Ingestor: wires source, batches, encoder, sink and executor together."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2

from embedlib.backoff import Backoff
from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import (
    DEFAULT_RECONNECT_S,
    Connection,
    Session,
    check_connection_room,
    connect,
    ensure_vector_extension,
    fetch_all,
    resolve_dsn,
    transaction,
)
from embedlib.encode.base import Encoder, encodes_concurrently, resolve_encoder
from embedlib.encode.identity import model_identity
from embedlib.errors import ConfigError, EmbedlibError, SchemaError
from embedlib.options import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MODEL, Settings, env_dsn, env_workers
from embedlib.plan.batching import Batch
from embedlib.plan.planner import Planner, PlanOptions
from embedlib.query.index import IndexReport, build_index, check_choice, check_metric
from embedlib.query.search import Match, nearest
from embedlib.redaction import get_logger
from embedlib.run.executors import Executor, WorkerFactory, make_executor
from embedlib.run.report import IngestReport
from embedlib.run.worker import BatchWorker, WorkerSpec
from embedlib.source.reader import (
    PendingReader,
    Retries,
    Span,
    count_given_up,
    count_null_ids,
    count_pending,
    duplicate_counts,
)
from embedlib.source.sharing import Leases, hold, new_holder_key
from embedlib.source.tables import inspect_source
from embedlib.store.provenance import claim_target, model_key, served_target
from embedlib.store.schema import check_dtype, ensure_side_tables, ensure_target
from embedlib.store.sink import clear_resolved_errors, refresh_frequency

log = get_logger(__name__)

# How long a run waits for another run sharing the table to store a text they
# both need, before encoding it itself: that run should take seconds.
CLAIM_WAIT_S = 300.0


class Ingestor:
    """Embed every row of ``table`` that needs it and store vectors and metrics.

    >>> report = Ingestor(table="sentences").run()

    ``dsn`` defaults to ``EMBEDLIB_DSN``, then ``DATABASE_URL``, then the
    embedded server. ``executor`` is a name from ``executors.EXECUTORS``
    (``"auto"`` is the pipelined one) or an Executor instance; ``workers``
    (default ``EMBED_WORKERS``, else the executor's own default) is what it
    runs in parallel. ``batch_size`` texts make a batch (one transaction);
    ``batch_tokens`` caps the tokens of each call to the model within it.
    A lost database connection is made again for up to ``reconnect_s``
    seconds, and the work under way is redone (see ``db.Session``). Rows
    whose text the model fails on are recorded in the errors table and
    tried again by later runs, up to ``max_attempts`` times in all.
    ``dtype="half"`` makes a new target store halfvec (float16, half the
    space); None keeps an existing target's type, float for a new one.
    With ``autoscale``, ``workers`` is a ceiling and the run chooses how many
    to use from the throughput it measures (see ``executors.autoscale``); an
    encoder whose calls can overlap (a service URL) gets one encoder thread
    per worker in the default executor, so that ``workers`` requests are in flight.
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
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        metrics_only: bool = False,
        dtype: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        reconnect_s: float = DEFAULT_RECONNECT_S,
        autoscale: bool = False,
        index: str | None = None,
        metric: str = "cosine",
        progress: bool = False,
    ) -> None:
        # An executor made here is this Ingestor's, shut down after each run; one
        # passed in is the caller's (a process pool, say, kept warm between runs).
        self._owns_executor = not isinstance(executor, Executor)
        if isinstance(executor, Executor):
            if autoscale:
                raise ConfigError("autoscale is for executors made by name; pass ThreadedExecutor(n, autoscale=True)")
            self.executor = executor
        else:
            self.executor = make_executor(
                executor,
                env_workers() if workers is None else workers,
                concurrent_encoder=encodes_concurrently(model),
                autoscale=autoscale,
            )
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
            batch_tokens=batch_tokens,
            metrics_only=metrics_only,
            dtype=dtype,
            max_attempts=max_attempts,
            reconnect_s=reconnect_s,
        )
        if index is not None:
            check_choice(index, metric)
        else:
            check_metric(metric)  # search uses it too
        self.index, self.metric = index, metric
        self.progress = progress
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the run under way to stop: batches under way are finished and committed, no new
        one starts, and ``run()`` returns its report with ``stopped`` set. Safe to call from a
        signal handler or another thread; what is left is pending for the next run."""
        self._stop.set()

    def run(self, limit: int | None = None) -> IngestReport:
        """Process up to ``limit`` pending rows (all by default) and report what happened."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a whole number >= 1, got {limit!r}")
        started = time.perf_counter()
        s = self.settings
        dsn = resolve_dsn(s.dsn)
        holder = new_holder_key()  # this run's, among the ingestors sharing the table (see claims)
        # Reads need no transaction (autocommit): each query sees the latest commits.
        session = Session(
            dsn, autocommit=True, reconnect_s=s.reconnect_s, on_connect=functools.partial(hold, key=holder)
        )
        leases: Leases | None = None
        try:
            # Each worker holds one connection for the whole run: the pool is as big as the executor.
            session.run(lambda conn: check_connection_room(conn, self.executor.workers))
            retries = Retries(s.max_attempts, session.run(_server_time))
            prepared = session.run(lambda conn: self._prepare(conn, retries))
            source, target, label, pending = prepared.source, prepared.target, prepared.model_key, prepared.pending
            if prepared.null_ids:
                log.warning(
                    "%d rows of %s have a NULL %r and are left out: embedlib keys vectors by it; give them ids",
                    prepared.null_ids, source.label, source.id_column,
                )  # fmt: skip
            setup_s = time.perf_counter() - started
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
            report.null_ids = prepared.null_ids
            report.given_up = session.run(lambda conn: count_given_up(conn, source, target, retries))
            duplicates = session.run(lambda conn: duplicate_counts(conn, source))
            spec = WorkerSpec(
                dsn=dsn,
                target=target,
                model=s.model,
                metrics_only=s.metrics_only,
                batch_tokens=s.batch_tokens,
                reconnect_s=s.reconnect_s,
                holder=holder,
                model_key=label,
            )
            encoder = resolve_encoder(s.model) if prepared.to_encode else None  # loaded already if so
            options = PlanOptions(
                batch_size=s.batch_size,
                max_tokens=getattr(encoder, "max_tokens", None),
                count_tokens=getattr(encoder, "count_tokens", None),
                metrics_only=s.metrics_only,
            )
            leases = Leases(source, target, holder, label)
            with _progress_bar(report.pending, enabled=self.progress and report.pending > 0) as bar:
                make_worker = functools.partial(BatchWorker, spec)
                run = _Run(session, source, target, label, retries, leases, duplicates, make_worker, report, bar)
                self._passes(run, options, limit)
            refresh_started = time.perf_counter()
            session.run(lambda conn: refresh_frequency(conn, target, duplicates))
            session.run(lambda conn: clear_resolved_errors(conn, target))
            report.write_s += time.perf_counter() - refresh_started
            report.reconnects += session.reconnects
            report.stopped = self._stop.is_set()
            if self.index and not report.stopped:
                report.index = self._build_index(dsn, target, self.index, self.metric).name
        finally:
            self._stop.clear()  # the next run starts afresh
            if leases is not None:
                with contextlib.suppress(EmbedlibError, psycopg2.Error):  # gone with the connection anyway
                    session.run(leases.release)
            session.close()
            if self._owns_executor:
                self.executor.shutdown()
        report.seconds = time.perf_counter() - started
        return report

    def search(self, query: str, k: int = 10, *, metric: str | None = None) -> list[Match]:
        """The ``k`` rows nearest to ``query``, closest first: (id, text, distance).

        The query is embedded by this Ingestor's model, and only its vectors are
        searched (a target holding another model's vectors is refused).
        ``metric`` defaults to the one given for the index.
        """
        conn = connect(resolve_dsn(self.settings.dsn), autocommit=True)
        try:
            source, target = self._embedded_tables(conn)
            return nearest(conn, source, target, self.settings.model, query, k, metric or self.metric)
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
        return self._build_index(dsn, target, method or self.index or "hnsw", metric or self.metric)

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

        with tqdm(total=0, unit="row", desc=f"{method} index", disable=not self.progress, leave=False) as bar:

            def show(phase: str, done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.set_postfix_str(phase, refresh=True)

            return build_index(dsn, target, method=method, metric=metric, on_progress=show)

    def _prepare(self, conn: Connection, retries: Retries) -> _Prepared:
        """Check everything before writing anything: source, model, then extension and target.

        The model is loaded only when there is text to encode (a few seconds
        saved on every run over an up-to-date table): a missing or different
        model always finds work, since rows embedded by another model are
        pending. Its identity (``identity.model_identity``) needs no load.
        """
        s = self.settings
        with transaction(conn):
            source = inspect_source(conn, s.table, s.id_column, s.text_column)
            identity = model_identity(s.model)
            target = served_target(conn, source, s.target)
            key = None
            if target is not None:
                check_dtype(target, s.dtype)
                ensure_side_tables(conn, target)
                claim_target(conn, target, source)
                key = model_key(conn, target, identity)
                # Now, not after the model has loaded: runs starting together would wait on these rows.
                conn.commit()
                clear_resolved_errors(conn, target)  # retries that worked in a run that ended early
            if s.metrics_only and target is None:
                raise SchemaError(f"table {s.target_table!r} does not exist yet: run ingest without --metrics-only")
            counts = None
            if target is not None and key is not None:
                counts = count_pending(conn, source, target, key, retries, metrics_only=s.metrics_only)
            if s.metrics_only:
                if counts and counts[1]:
                    resolve_encoder(s.model)  # its tokenizer counts tokens
            elif counts is None or counts[1] > 0:
                encoder = resolve_encoder(s.model)
                ensure_vector_extension(conn)
                target = ensure_target(conn, source, s.target, encoder.dimension, s.dtype)
                claim_target(conn, target, source)
                key = model_key(conn, target, identity)
            assert target is not None and key is not None
            if counts is None:
                counts = count_pending(conn, source, target, key, retries)
            null_ids = count_null_ids(conn, source)
            return _Prepared(source, target, key, counts[0], counts[1], null_ids)

    def _passes(self, run: _Run, options: PlanOptions, limit: int | None) -> None:
        """The first pass over the spans this run leases; then passes over those with rows deferred,
        until none are left."""
        planner = self._pass(run, options, limit=limit)
        options.defer_in_flight = False  # this run's batches are all written now
        backoff = Backoff(0.05, 1.0)
        while planner.deferred_spans and not self._stop.is_set():
            # Rows whose text was in flight: this run's (its vector is stored now), or
            # another run's (stored soon, or its claim freed if that run dies). Wait for
            # the other run, but not forever: past CLAIM_WAIT_S, encode the text here too.
            options.respect_claims = backoff.waited < CLAIM_WAIT_S
            planner = self._pass(run, options, spans=planner.deferred_spans, again=True)
            if planner.deferred_spans:
                backoff.sleep()

    def _pass(
        self,
        run: _Run,
        options: PlanOptions,
        *,
        limit: int | None = None,
        spans: list[Span] | None = None,
        again: bool = False,
    ) -> Planner:
        """One scan of the source (or of ``spans`` of it): plan batches, run them on the executor,
        add up the results.

        ``again``: a scan of spans an earlier pass covered, whose blank rows are counted already.
        """
        s = self.settings
        reader = PendingReader(
            run.session,
            run.source,
            run.target,
            run.label,
            run.retries,
            run.leases,
            window_size=s.window_size,
            limit=limit,
            metrics_only=s.metrics_only,
            spans=spans,
        )
        planner = Planner(run.session, run.target, run.label, run.duplicates, options, run.leases)
        skipped = 0
        batches = _until_set(self._stop, planner.batches(reader))
        for result in self.executor.map_unordered(run.make_worker, batches):
            run.report.add(result)
            newly_skipped = 0 if again else planner.skipped - skipped
            run.bar.update(result.rows + result.failed + newly_skipped)
            skipped = planner.skipped
        if not again:
            run.report.skipped += planner.skipped
            run.bar.update(planner.skipped - skipped)
            scaler = getattr(self.executor, "autoscaler", None)
            if scaler is not None:
                run.report.workers = scaler.chosen
                run.report.autoscale_steps = list(scaler.steps)
        run.report.read_s += reader.seconds
        return planner


@dataclass(frozen=True)
class _Prepared:
    """What a run found before writing anything."""

    source: SourceTable
    target: TargetTable
    model_key: str  # the name its vectors are stored under in this target (see schema.model_key)
    pending: int  # rows that need work
    to_encode: int  # of those, rows with text (the others are blank)
    null_ids: int  # rows that cannot be embedded: no id to key them by


@dataclass(frozen=True)
class _Run:
    """What every pass of one run shares."""

    session: Session
    source: SourceTable
    target: TargetTable
    label: str  # the model's
    retries: Retries
    leases: Leases
    duplicates: dict[str, int]  # source.duplicate_counts
    make_worker: WorkerFactory
    report: IngestReport
    bar: Any


def _until_set(stop: threading.Event, batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, until ``stop`` is set."""
    for batch in batches:
        if stop.is_set():
            return
        yield batch


def _progress_bar(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def _server_time(conn: Connection) -> Any:
    return fetch_all(conn, "SELECT now()")[0][0]
