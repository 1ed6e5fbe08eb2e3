"""The Ingestor: wires source, planner, the encode and write steps, and the executor together."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, connect, resolve_dsn
from embedlib.encode.base import encodes_concurrently
from embedlib.encode.identity import model_identity
from embedlib.errors import ConfigError, SchemaError
from embedlib.options import AUTO, Settings
from embedlib.query.index import IndexReport, build_index
from embedlib.query.search import Match, nearest
from embedlib.query.status import Status, status
from embedlib.redaction import get_logger
from embedlib.rules import Whole
from embedlib.run.cycle import run_once
from embedlib.run.executors import Executor, make_executor
from embedlib.run.follow import Wakeups, follow
from embedlib.run.prepare import source_of, tracked_target
from embedlib.run.report import IngestReport
from embedlib.store.provenance import model_key, served_target
from embedlib.store.tracking import channel, track, untrack

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
                device=s.model_device,
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

    def follow(
        self, on_cycle: Callable[[IngestReport], None] | None = None, *, every_cycle: bool = False
    ) -> IngestReport:
        """Embed what is pending, then keep the table in step until ``stop()``, with the model
        loaded: on a tracked table (``track()``) each change wakes it (LISTEN/NOTIFY), and it
        embeds what the change queue holds; it also looks every ``poll_interval_s``, which on an
        untracked table scans the source. ``on_cycle`` is given the report of every run that did
        something (``every_cycle``: of every run, for a status line or metrics). Returns the sum."""
        s = self.settings
        with self._connection() as conn:  # listening before the first run: no change after it goes unheard
            wakeups = Wakeups(resolve_dsn(s.dsn), channel(conn, source_of(conn, s), s.target))
        try:
            run = functools.partial(self._run_once, None)
            return follow(run, self._stop, s.poll_interval_s, wakeups, on_cycle, every_cycle=every_cycle)
        finally:
            wakeups.close()
            self._stop.clear()
            if self._owns_executor:
                self.executor.shutdown()

    def _run_once(self, limit: int | None) -> IngestReport:
        def index(dsn: str, target: TargetTable) -> str:
            assert self.settings.index is not None
            return self._build_index(dsn, target, self.settings.index, self.settings.metric).name

        return run_once(self.settings, self.executor, self._stop, limit, index)

    def track(self) -> bool:
        """Capture the table's changes from now on (store.tracking): triggers on the source queue
        the ids of rows inserted, updated (in their text) or deleted, and runs read that queue
        instead of the whole table; the first run after this one still reads it all once. Makes
        the target if there is none yet (loading the model for its dimension). Idempotent: True
        if tracking was not fully in place before. Needs TRIGGER on the table and CREATE on the
        target's schema."""
        s = self.settings
        with self._connection() as conn:
            source = source_of(conn, s)
            target = tracked_target(conn, source, s)
            key = model_key(conn, target, model_identity(s.model))
            assert key is not None
            return track(conn, source, target, key)

    def untrack(self) -> bool:
        """Stop capturing the table's changes: its triggers, function and queue are dropped, and
        runs read the whole table again. True if it was tracked."""
        s = self.settings
        with self._connection() as conn:
            source = source_of(conn, s)
            target = served_target(conn, source, s.target)
            return target is not None and untrack(conn, source, target)

    def search(self, query: str, k: int = 10, *, metric: str | None = None) -> list[Match]:
        """The ``k`` rows nearest to ``query``, closest first: (id, text, distance).

        The query is embedded by this Ingestor's model, and only its vectors are
        searched (a target holding another model's vectors is refused).
        ``metric`` defaults to the one given for the index.
        """
        with self._connection() as conn:
            source, target = self._embedded_tables(conn)
            return nearest(conn, source, target, self.settings.model, query, k, metric or self.settings.metric)

    def status(self) -> Status:
        """Where the table stands for this Ingestor's model: rows embedded, pending, given up,
        vectors of deleted rows, runs working on it now. Reads only; loads no model."""
        s = self.settings
        with self._connection() as conn:
            return status(conn, source_of(conn, s), s.target, s.model, s.max_attempts)

    def build_index(self, method: str | None = None, metric: str | None = None) -> IndexReport:
        """Build a pgvector index on the stored vectors now (``index`` and ``metric`` by default,
        else HNSW and cosine), with a progress bar if asked for; an existing one is reported as is."""
        with self._connection() as conn:
            _, target = self._embedded_tables(conn)
        method = method or self.settings.index or "hnsw"
        return self._build_index(resolve_dsn(self.settings.dsn), target, method, metric or self.settings.metric)

    def _connection(self) -> contextlib.closing[Connection]:
        """A connection for one call, closed after it (autocommit: reads see the latest commits)."""
        return contextlib.closing(connect(resolve_dsn(self.settings.dsn), autocommit=True))

    def _embedded_tables(self, conn: Connection) -> tuple[SourceTable, TargetTable]:
        """The source and its target, which must exist: search and index need stored vectors."""
        s = self.settings
        source = source_of(conn, s)
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


__all__: Sequence[str] = ["Ingestor"]
