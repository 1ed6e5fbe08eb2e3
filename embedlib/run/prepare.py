"""Everything a run checks before it writes anything: the source, the model, the target."""

from __future__ import annotations

from dataclasses import dataclass

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.server import ensure_vector_extension
from embedlib.db.session import Connection, transaction
from embedlib.encode.base import Encoder, resolve_encoder
from embedlib.encode.identity import model_identity
from embedlib.errors import SchemaError
from embedlib.options import Settings
from embedlib.redaction import get_logger
from embedlib.source.counts import count_null_ids
from embedlib.source.reader import Retries, count_pending
from embedlib.source.tables import inspect_source
from embedlib.store.chunks import Chunking, check_chunking, chunking_of, record_chunking
from embedlib.store.provenance import claim_target, model_key, served_target
from embedlib.store.schema import check_dtype, ensure_side_tables, ensure_target, target_name
from embedlib.store.tracking import Tracking, check_privileges, request_resync, tracking
from embedlib.store.upkeep import clear_resolved_errors

log = get_logger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What a run found before writing anything."""

    source: SourceTable
    target: TargetTable
    model_key: str  # the name its vectors are stored under in this target (see provenance.model_key)
    pending: int  # rows that need work
    to_encode: int  # of those, rows with text (the others are blank)
    null_ids: int  # rows that cannot be embedded: no id to key them by
    tracking: Tracking | None = None  # the target's change capture, if its source is tracked
    # A tracked table's run reads its change queue, and its pending rows are the queue's entries;
    # but a full pass comes first after track or a TRUNCATE, or for another model's run.
    full_pass: bool = True
    chunking: Chunking | None = None  # how texts are cut into chunks, on a chunked target


def prepare(conn: Connection, settings: Settings, retries: Retries) -> Prepared:
    """Check source, model, then extension and target; make the target if there is text for it.

    The model is loaded only when there is text to encode (a few seconds
    saved on every run over an up-to-date table): a missing or different
    model always finds work, since rows embedded by another model are
    pending. Its identity (``identity.model_identity``) needs no load.
    """
    s = settings
    with transaction(conn):
        source = source_of(conn, s)
        identity = model_identity(s.model)
        target = served_target(conn, source, s.target)
        chunking = chunking_of(conn, target, s.chunk_tokens, s.chunk_overlap)
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
        tracked = _tracking_for(conn, source, target, key) if target is not None and not s.metrics_only else None
        full_pass = tracked is None or tracked.resync is not None
        if target is not None and not full_pass:
            queued = target.queue.depth(conn)[0]
            counts = (queued, queued)  # what the queue names: no scan of the source
        elif target is not None and key is not None:
            counts = count_pending(conn, source, target, key, retries, metrics_only=s.metrics_only)
        if s.metrics_only:
            if counts and counts[1]:
                encoder_of(s)  # its tokenizer counts tokens
        elif counts is None or counts[1] > 0:
            target = _made_target(conn, source, s, chunking)
            key = model_key(conn, target, identity)
        assert target is not None and key is not None
        if counts is None:
            counts = count_pending(conn, source, target, key, retries)
        null_ids = count_null_ids(conn, source)
        return Prepared(source, target, key, counts[0], counts[1], null_ids, tracked, full_pass, chunking)


def encoder_of(settings: Settings) -> Encoder:
    """The run's own copy of its encoder (its tokenizer plans, its dimension sizes the target),
    loaded once per process for its model, device and precision. With Ray the model encodes on the
    actors, which take the device and precision (a cluster's GPUs), so this copy is on the CPU."""
    if settings.executor == "ray":
        return resolve_encoder(settings.model, device="cpu", precision="fp32")
    return resolve_encoder(settings.model, device=settings.model_device, precision=settings.precision)


def source_of(conn: Connection, settings: Settings) -> SourceTable:
    """The source the settings name (its table, id column, and text column or template), checked."""
    s = settings
    return inspect_source(conn, s.table, s.id_column, s.text_column, s.text_template)


def _tracking_for(conn: Connection, source: SourceTable, target: TargetTable, key: str | None) -> Tracking | None:
    """The target's tracking if this run reads the change queue: it is the tracked model's, and
    the triggers are all there. Otherwise the run passes over the whole source, as on an untracked
    table, and asks for a full pass of the tracked model's next run: this run rewrites vectors
    behind the queue's back (another model's), or changes went unseen (triggers disabled)."""
    found = tracking(conn, source, target)
    if found is None:
        return None
    if found.intact and found.model == key:
        return found
    request_resync(conn, target)
    if not found.intact:
        log.warning("the triggers tracking %s are missing or disabled: reading the whole table", source.label)
    return None


def tracked_target(conn: Connection, source: SourceTable, settings: Settings) -> TargetTable:
    """The target that tracking ``source`` installs its queue beside, checked as a run checks it;
    made now if there is none (the model is loaded for its dimension). Commits."""
    s = settings
    check_privileges(conn, source, target_name(source, s.target)[0])  # before anything loads or changes
    with transaction(conn):
        target = served_target(conn, source, s.target)
        chunking = chunking_of(conn, target, s.chunk_tokens, s.chunk_overlap)
        if target is None:
            return _made_target(conn, source, s, chunking)
        check_dtype(target, s.dtype)
        ensure_side_tables(conn, target)
        claim_target(conn, target, source)
    return target


def _made_target(conn: Connection, source: SourceTable, s: Settings, chunking: Chunking | None) -> TargetTable:
    """The target, made if missing (the model is loaded for its dimension), recording its chunking."""
    encoder = encoder_of(s)
    if chunking is not None:
        check_chunking(encoder, chunking)  # before the target is made chunked
    ensure_vector_extension(conn)
    target = ensure_target(conn, source, s.target, encoder.dimension, s.dtype, chunked=chunking is not None)
    with transaction(conn):
        if chunking is not None:
            record_chunking(conn, target, chunking)
        claim_target(conn, target, source)
    return target
