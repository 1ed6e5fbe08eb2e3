"""The report of a run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class BatchResult:
    """What writing one batch did."""

    rows: int  # rows written
    encoded: int  # texts run through the model
    failed: int  # rows not written because their text failed to embed (see encode.failures)
    encode_s: float
    write_s: float
    reconnects: int = 0  # connections lost and made again while writing it
    truncated: int = 0  # rows written whose text is longer than the model's window (cut to it)
    round_trips: int = 0  # to the database, writing it (see db.trips)


@dataclass
class IngestReport:
    """What a run did. ``rows`` counts rows written; ``encoded`` counts texts run
    through the model, which is lower when rows share a text.

    ``seconds`` is the whole run; ``setup_s`` the part of it spent before the
    first row (loading the model, checking tables), and ``rows_per_s`` the
    rate after that. ``read_s``, ``encode_s`` and ``write_s`` are summed over
    workers, so with several workers they can add up to more than ``seconds``.
    """

    table: str
    target: str
    model: str
    executor: str
    workers: int
    batch_size: int
    metrics_only: bool = False
    pending: int = 0  # rows that needed work when the run started (after --limit)
    rows: int = 0
    encoded: int = 0
    skipped: int = 0  # NULL, empty or blank text
    truncated: int = 0  # rows written whose text the model cut at its window: their ends are not searchable
    failed: int = 0  # rows whose text the model failed on (recorded in the errors table)
    removed: int = 0  # vectors of rows deleted from the source, removed from the target
    given_up: int = 0  # rows left out: their text failed max_attempts times in earlier runs
    null_ids: int = 0  # rows left out: their id is NULL, so nothing can key their vector
    reconnects: int = 0  # database connections lost and made again during the run
    stopped: bool = False  # stopped early on request (Ctrl-C): the rest is pending for the next run
    seconds: float = 0.0
    setup_s: float = 0.0
    read_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    autoscale_steps: list[int] = field(default_factory=list)  # worker counts tried, in order, when autoscaling
    index: str | None = None  # the vector index built (or found) after the load, when one was asked for
    tracked: bool = False  # the source's changes are captured (store.tracking): the run read its queue
    queue_depth: int | None = None  # on a tracked table: changes waiting when the run ended
    queue_age_s: float | None = None  # and how long the oldest of them has waited
    notes: list[str] = field(default_factory=list)
    # Round trips to the database (see db.trips): in all, of them before the first row (setup) and
    # writing the run's ``batches``; the rest read and planned.
    round_trips: int = 0
    setup_round_trips: int = 0
    write_round_trips: int = 0
    batches: int = 0

    @property
    def rows_per_s(self) -> float:
        working = self.seconds - self.setup_s
        return self.rows / working if working > 0 else 0.0

    @property
    def did_something(self) -> bool:
        return bool(self.rows or self.removed or self.failed or self.skipped)

    def merge(self, later: IngestReport) -> None:
        """Add a later run's counts and times to this report (following a table: one report in all)."""
        counts = ("rows", "encoded", "skipped", "truncated", "failed", "removed", "reconnects", "batches")
        for name in (*counts, "round_trips", "setup_round_trips", "write_round_trips"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        for name in ("seconds", "setup_s", "read_s", "encode_s", "write_s"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        self.pending, self.given_up, self.null_ids = later.pending, later.given_up, later.null_ids
        self.tracked, self.queue_depth, self.queue_age_s = later.tracked, later.queue_depth, later.queue_age_s
        self.stopped = later.stopped

    def add(self, batch: BatchResult) -> None:
        """Count one finished batch."""
        self.rows += batch.rows
        self.encoded += batch.encoded
        self.failed += batch.failed
        self.truncated += batch.truncated
        self.reconnects += batch.reconnects
        self.batches += 1
        self.write_round_trips += batch.round_trips
        self.encode_s += batch.encode_s
        self.write_s += batch.write_s

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["rows_per_s"] = round(self.rows_per_s, 2)
        for key in ("seconds", "setup_s", "read_s", "encode_s", "write_s"):
            data[key] = round(data[key], 3)
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    def debug_lines(self) -> list[str]:
        """What ``--debug`` adds to the summary: where a distant database charges."""
        reading = self.round_trips - self.setup_round_trips - self.write_round_trips
        per_batch = self.write_round_trips / self.batches if self.batches else 0.0
        return [
            f"  round trips to the database: {self.round_trips} in all; {self.setup_round_trips} setting up, "
            f"{reading} reading and planning, {self.write_round_trips} writing {self.batches} batches "
            f"({per_batch:.1f} a batch)"
        ]

    def summary(self, *, debug: bool = False) -> str:
        verb = "updated metrics of" if self.metrics_only else "embedded"
        lines = [
            f"{verb} {self.rows} rows of {self.table} into {self.target} "
            f"in {self.seconds:.1f} s ({self.rows_per_s:.1f} rows/s after {self.setup_s:.1f} s of setup)",
            f"  encoded {self.encoded} distinct texts, skipped {self.skipped} blank, failed {self.failed}",
            f"  model {self.model}, executor {self.executor} x{self.workers}, batch size {self.batch_size}",
            f"  time: read {self.read_s:.2f} s, encode {self.encode_s:.2f} s, write {self.write_s:.2f} s",
        ]
        if self.autoscale_steps:
            tried = ", ".join(map(str, self.autoscale_steps))
            lines.append(f"  autoscale: worker counts tried in turn {tried}; kept {self.workers}")
        if self.index:
            lines.append(f"  index: {self.index}")
        if self.given_up:
            lines.append(
                f"  left out {self.given_up} rows whose text failed in earlier runs as often as allowed "
                "(see the errors table; delete a row there to try it again)"
            )
        if self.truncated:
            lines.append(
                f"  {self.truncated} rows are longer than the model's window and were cut to it: the rest of "
                "their text is not searchable; a target made with --chunk-tokens embeds them whole, in chunks"
            )
        if self.removed:
            lines.append(f"  removed {self.removed} vectors of rows deleted from the source")
        if self.null_ids:
            lines.append(f"  left out {self.null_ids} rows whose id is NULL (give them ids to embed them)")
        if self.reconnects:
            lines.append(f"  database connections lost and made again: {self.reconnects}")
        if self.stopped:
            lines.append("  stopped early: batches under way were committed; the next run does the rest")
        lines.extend(f"  note: {note}" for note in self.notes)
        if debug:
            lines.extend(self.debug_lines())
        return "\n".join(lines)
