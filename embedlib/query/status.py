"""Where a table stands: what is embedded, what is pending, what failed, who is working on it.

Read-only: it loads no model (a model's identity is a digest of its files,
see ``encode.identity``) and writes nothing, so it can run beside ingests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg2 import sql

from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, fetch_all, server_time
from embedlib.encode.identity import model_identity
from embedlib.source.counts import count_given_up, count_null_ids, count_rows
from embedlib.source.reader import Retries, count_pending, rows_of
from embedlib.source.sharing import live_holders
from embedlib.store.provenance import model_key, served_target
from embedlib.store.tracking import tracking
from embedlib.store.upkeep import deleted_rows


@dataclass(frozen=True)
class Status:
    table: str
    target: str | None  # None: not made yet (no run has embedded anything)
    model: str  # the name the model's vectors are stored under
    rows: int  # source rows with an id
    embedded: int  # rows whose vector is this model's, for their current text
    pending: int  # rows a run would work on (exact): no vector, a changed text, another model
    pending_with_text: int  # of those, rows with text to encode (the others are blank)
    given_up: int  # rows left out after max_attempts failures of their current text
    null_ids: int  # rows left out: no id to key a vector by
    orphans: int  # vectors of rows deleted from the source, removed by the next run
    other_models: int  # vectors of other models in the target
    runs: int  # runs holding leases on the target now
    tracked: bool = False  # its changes are captured (store.tracking): runs read the change queue
    queue_depth: int | None = None  # if tracked: changes waiting
    queue_age_s: float | None = None  # and how long the oldest has waited (None: none waits)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.target is None:
            return f"{self.table}: {self.rows} rows, none embedded yet (no target): {self.pending} pending"
        lines = [
            f"{self.table} -> {self.target} ({self.model})",
            f"  rows {self.rows}, embedded {self.embedded}, pending {self.pending} "
            f"({self.pending_with_text} with text)",
            f"  given up {self.given_up}, NULL ids {self.null_ids}, vectors of deleted rows {self.orphans}",
            f"  vectors of other models {self.other_models}, runs working on it now {self.runs}",
        ]
        if self.tracked:
            oldest = "" if self.queue_age_s is None else f", the oldest {self.queue_age_s:.1f} s old"
            lines.append(f"  tracked: {self.queue_depth} changes queued{oldest}")
        else:
            lines.append("  not tracked: each run reads the whole table (embedlib track to capture changes)")
        return "\n".join(lines)


def status(conn: Connection, source: SourceTable, target_name: str | None, model: Any, max_attempts: int) -> Status:
    """The status of ``source`` and its target for ``model`` (a name, path, URL or encoder)."""
    target = served_target(conn, source, target_name)
    identity = model_identity(model)
    rows, with_text = count_rows(conn, source)
    null_ids = count_null_ids(conn, source)
    if target is None:
        return Status(source.label, None, identity.label, rows, 0, rows, with_text, 0, null_ids, 0, 0, 0)
    # None: the target holds no vector of this model (its label may be another model's): "" matches none.
    key = model_key(conn, target, identity, create=False) or ""
    retries = Retries(max_attempts, server_time(conn))
    pending, with_text = count_pending(conn, source, target, key, retries)
    tracked = tracking(conn, source, target) is not None
    depth, age = target.queue.depth(conn) if tracked else (None, None)
    return Status(
        table=source.label,
        target=target.label,
        model=key or identity.label,
        rows=rows,
        embedded=_embedded(conn, source, target, key),
        pending=pending,
        pending_with_text=with_text,
        given_up=count_given_up(conn, source, target, retries),
        null_ids=null_ids,
        orphans=_orphans(conn, source, target),
        other_models=_count(
            conn,
            sql.SQL("SELECT count(*) FROM {} t WHERE model <> %s AND {}").format(target.ident, target.first_chunk("t")),
            key,
        ),
        runs=len(live_holders(conn, target)),
        tracked=tracked,
        queue_depth=depth,
        queue_age_s=age,
    )


def _count(conn: Connection, query: sql.Composable, *params: Any) -> int:
    return int(fetch_all(conn, query, params or None)[0][0])


def _embedded(conn: Connection, source: SourceTable, target: TargetTable, key: str) -> int:
    query = sql.SQL(
        "SELECT count(*) FROM {rows} s JOIN {target} t ON t.id = s.id AND {first} "
        "WHERE t.model = %s AND t.text_hash = md5(s.text)"
    ).format(rows=rows_of(source), target=target.ident, first=target.first_chunk("t"))
    return _count(conn, query, key)


def _orphans(conn: Connection, source: SourceTable, target: TargetTable) -> int:
    return _count(conn, sql.SQL("SELECT count(*) FROM {} x WHERE {}").format(target.ident, deleted_rows(source)))
