"""One run: check the tables, pass over what needs work, and leave the target in order behind it.

On an untracked table a run passes over the whole source, span by span. On
a tracked one (``store.tracking``) it reads the change queue instead, after
a full pass when one is due (after ``track``, after a TRUNCATE, or for a run
of another model than the one tracked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2

from embedlib.db.relations import TargetTable
from embedlib.db.server import check_connection_room
from embedlib.db.session import Session, resolve_dsn, server_time
from embedlib.encode.base import Encoder
from embedlib.errors import EmbedlibError
from embedlib.options import Settings
from embedlib.plan.awaiting import InFlight
from embedlib.plan.planner import PlanOptions
from embedlib.redaction import get_logger
from embedlib.run.executors import Executor, Stages
from embedlib.run.passes import Passes
from embedlib.run.prepare import Prepared, encoder_of, prepare
from embedlib.run.report import BatchResult, IngestReport
from embedlib.run.steps import EncodeSpec, EncodeStep, WriteStep
from embedlib.source.counts import count_given_up, duplicate_counts
from embedlib.source.reader import Retries, has_vectors
from embedlib.source.rows import PendingRow
from embedlib.source.sharing import Sharing
from embedlib.store.chunk_sink import ChunkSink
from embedlib.store.chunks import Chunking, check_chunking
from embedlib.store.sink import Sink
from embedlib.store.tracking import synced
from embedlib.store.upkeep import (
    clear_resolved_errors,
    refresh_frequency,
    refresh_touched,
    remove_gone,
    remove_orphans,
    skip_blank,
)

log = get_logger(__name__)


def run_once(
    settings: Settings,
    executor: Executor,
    stop: threading.Event,
    limit: int | None,
    build_index: Callable[[str, TargetTable], str],
) -> IngestReport:
    """Process up to ``limit`` pending rows (all by default) and report what happened.

    ``build_index(dsn, target)`` builds the index the settings ask for, after the rows."""
    started = time.perf_counter()
    s = settings
    dsn = resolve_dsn(s.dsn)
    sharing = Sharing()  # this run's place among the ingestors sharing the table
    # Reads need no transaction (autocommit): each query sees the latest commits.
    session = Session(dsn, autocommit=True, reconnect_s=s.reconnect_s, on_connect=sharing.hold)
    prepared: Prepared | None = None
    try:
        # One connection reads, and each writer holds one for the whole run.
        session.run(lambda conn: check_connection_room(conn, executor.workers))
        retries = Retries(s.max_attempts, session.run(server_time))
        prepared = session.run(lambda conn: prepare(conn, s, retries))
        sharing.start(prepared.source, prepared.target, prepared.model_key)
        report = _new_report(s, executor, prepared, limit)
        report.given_up = session.run(lambda conn: count_given_up(conn, prepared.source, prepared.target, retries))
        _Run(s, dsn, session, prepared, sharing, retries, executor, stop, report, started).passes(limit)
        if s.index and not report.stopped:
            report.index = build_index(dsn, prepared.target)
    finally:
        if prepared is not None:
            with contextlib.suppress(EmbedlibError, psycopg2.Error):  # gone with the connection anyway
                if prepared.tracking is not None:
                    session.run(lambda conn: prepared.target.queue.release(conn, sharing.key))
                session.run(sharing.release)
        session.close()
    report.seconds = time.perf_counter() - started
    report.round_trips = session.round_trips + report.write_round_trips
    return report


def _new_report(s: Settings, executor: Executor, prepared: Prepared, limit: int | None) -> IngestReport:
    if prepared.null_ids:
        log.warning(
            "%d rows of %s have a NULL %r and are left out: embedlib keys vectors by it; give them ids",
            prepared.null_ids, prepared.source.label, prepared.source.id_column,
        )  # fmt: skip
    report = IngestReport(
        table=prepared.source.label,
        target=prepared.target.label,
        model=prepared.model_key,
        executor=executor.name,
        workers=executor.workers,
        batch_size=s.batch_size,
        metrics_only=s.metrics_only,
        tracked=prepared.tracking is not None,
    )
    report.pending = prepared.pending if limit is None else min(prepared.pending, limit)
    report.null_ids = prepared.null_ids
    return report


@dataclasses.dataclass
class _Run:
    """The passes of one run and what it does after them."""

    settings: Settings
    dsn: str
    session: Session
    prepared: Prepared
    sharing: Sharing
    retries: Retries
    executor: Executor
    stop: threading.Event
    report: IngestReport
    started: float  # when the run began (perf_counter)

    def passes(self, limit: int | None) -> None:
        s, prepared, report = self.settings, self.prepared, self.report
        target, tracked = prepared.target, prepared.tracking is not None
        full_pass = prepared.full_pass and (not tracked or self._resync_is_mine())
        # The source's counts, for a full pass; a run from the queue counts the texts it touched, after.
        duplicates = self.session.run(lambda conn: duplicate_counts(conn, prepared.source)) if full_pass else None
        encoder = encoder_of(s) if prepared.to_encode else None  # loaded already if so
        chunking = prepared.chunking
        if chunking is not None and encoder is not None:
            check_chunking(encoder, chunking)
        had_vectors = s.metrics_only or self.session.run(lambda conn: has_vectors(conn, target, prepared.model_key))
        # Setup ends here: what comes next is done row by row.
        report.setup_s, report.setup_round_trips = time.perf_counter() - self.started, self.session.round_trips
        options = _plan_options(s, encoder, chunking, had_vectors)
        in_flight = InFlight(options.recent_hashes)
        stages = self._stages(encoder, in_flight)
        removal_s: list[float] = []  # on the reader's thread: added to the report after the passes
        with _progress_bar(report.pending, enabled=s.progress and report.pending > 0) as bar:
            passes = Passes(
                settings=s,
                session=self.session,
                prepared=prepared,
                sharing=self.sharing,
                retries=self.retries,
                duplicates=duplicates or {},
                executor=self.executor,
                stages=stages,
                on_blank=self._on_blank,
                on_covered=functools.partial(self._on_covered, removal_s),
                on_gone=self._on_gone,
                in_flight=in_flight,
                report=report,
                stop=self.stop,
                bar=bar,
            )
            reads_queue = tracked and not prepared.full_pass
            if full_pass:
                passes.run(dataclasses.replace(options), limit)
                reads_queue = tracked and self._after_resync(limit)
            if reads_queue and not self.stop.is_set():
                passes = dataclasses.replace(passes, from_queue=True)
                # Other runs may read the queue at once, and no run knows the source's counts.
                # had_vectors asked again: the full pass may have just stored what the queue names.
                passes.run(dataclasses.replace(options, claim_every_text=True, had_vectors=None), limit)
        report.write_s += sum(removal_s)
        # A target that held no vector of the model, that no other run wrote to, holds only rows
        # this run wrote, with the frequencies of the source's counts: none to correct.
        fresh = not had_vectors and not self.sharing.others_seen
        self._upkeep(None if fresh else duplicates, passes.touched)

    def _stages(self, encoder: Encoder | None, in_flight: InFlight) -> Stages[Any, Any, BatchResult]:
        """Encode (anywhere: no DSN in it, it may be sent to processes or actors), then write (here)."""
        s, target = self.settings, self.prepared.target
        spec = EncodeSpec(
            s.model, target.dimension, target.vector_type, s.metrics_only, s.batch_tokens, s.model_device, s.precision
        )
        holder = self.sharing.key if self.prepared.tracking is not None else None
        return Stages(
            compute=functools.partial(EncodeStep, spec),
            finish=functools.partial(
                _writer,
                self.dsn,
                target,
                self.prepared.model_key,
                s.reconnect_s,
                encoder,
                self.sharing,
                holder,
                in_flight,
            ),
        )

    def _resync_is_mine(self) -> bool:
        """Whether this run makes the full pass a tracked table is due (after track or a TRUNCATE).
        One run makes it, alone, so that when it ends the whole source was read (runs sharing it
        would each skip what the others leased, whether they finished it or not); the others wait
        for it and read nothing meanwhile, the queue included."""
        mine = self.session.run(lambda conn: self.sharing.lock_resync(conn))
        if not mine:
            self.report.notes.append("another run is reading the whole table after track or TRUNCATE; try again soon")
        return mine

    def _after_resync(self, limit: int | None) -> bool:
        """Once the full pass has read the whole source (no limit, no stop), runs read the queue
        again; True if so, and this run goes on to read it."""
        tracking = self.prepared.tracking
        if tracking is None or tracking.resync is None or limit is not None or self.stop.is_set():
            return False
        marker = tracking.resync
        self.session.run(lambda conn: synced(conn, self.prepared.target, marker))
        return True

    def _upkeep(self, duplicates: dict[str, int] | None, touched: set[str]) -> None:
        """``duplicates``: the source's counts, where the run made a full pass."""
        started = time.perf_counter()
        target, session = self.prepared.target, self.session
        if duplicates is not None:
            session.run(lambda conn: refresh_frequency(conn, target, duplicates))
        if self.prepared.tracking is not None:
            session.run(lambda conn: refresh_touched(conn, target, touched))
            self.report.queue_depth, self.report.queue_age_s = session.run(target.queue.depth)
        session.run(lambda conn: clear_resolved_errors(conn, target))
        self.report.write_s += time.perf_counter() - started
        self.report.reconnects += session.reconnects
        self.report.stopped = self.stop.is_set()

    def _on_blank(self, rows: list[PendingRow]) -> None:
        target, holder = self.prepared.target, self.sharing.key
        ids, hashes = [row.id for row in rows], [str(row.text_hash) for row in rows]
        seqs = [row.seq for row in rows if row.seq is not None]
        assert not seqs or len(seqs) == len(rows), "a window is read from the queue or from the source"
        settle = (lambda cur: target.queue.settle(cur, holder, ids, seqs)) if seqs else None
        self.session.run(lambda conn: skip_blank(conn, target, ids, hashes, settle))

    def _on_covered(self, removal_s: list[float], after: str | None, last: str | None) -> None:
        started = time.perf_counter()
        source, target = self.prepared.source, self.prepared.target
        self.report.removed += self.session.run(lambda conn: remove_orphans(conn, source, target, after, last))
        removal_s.append(time.perf_counter() - started)

    def _on_gone(self, ids: list[str], seqs: list[int]) -> None:
        target, holder = self.prepared.target, self.sharing.key
        self.report.removed += self.session.run(lambda conn: remove_gone(conn, target, holder, ids, seqs))


def _plan_options(s: Settings, encoder: Encoder | None, chunking: Chunking | None, had_vectors: bool) -> PlanOptions:
    return PlanOptions(
        had_vectors=had_vectors,
        batch_size=s.batch_size,
        max_tokens=getattr(encoder, "max_tokens", None),
        count_tokens=getattr(encoder, "count_tokens", None),
        tokenize=getattr(encoder, "tokenize", None),
        metrics_only=s.metrics_only,
        chunk_tokens=chunking.tokens if chunking is not None else None,
        chunk_overlap=chunking.overlap if chunking is not None else 0,
    )


def _writer(
    dsn: str,
    target: TargetTable,
    model_key: str,
    reconnect_s: float,
    encoder: Encoder | None,
    sharing: Sharing,
    holder: int | None,
    in_flight: InFlight,
) -> WriteStep:
    """A writer thread's step, with its own connection (made here, in the thread, at its first batch)."""
    sink = (ChunkSink if target.chunked else Sink)(dsn, target, model_key, reconnect_s=reconnect_s, holder=holder)
    return WriteStep(
        sink,
        encoder,
        errors_label=target.errors.label,
        on_failed=sharing.release_texts,
        on_written=in_flight.settled,
    )


def _progress_bar(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
