"""Keeping a table in step: run, wait, run again, until asked to stop.

Each run costs a scan of the source span by span (what the table holds, not
what changed): a poll interval of a few seconds suits tables of up to a few
million rows; see docs/guide.md#following-a-table.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from embedlib.run.report import IngestReport


def follow(
    run_once: Callable[[], IngestReport],
    stop: threading.Event,
    poll_s: float,
    on_cycle: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """``run_once`` until ``stop`` is set, ``poll_s`` apart; the sum of their reports."""
    first = run_once()
    if on_cycle is not None and first.did_something:
        on_cycle(first)
    total = dataclasses.replace(first)  # the sum, apart from the first run's own report
    while not total.stopped and not stop.wait(poll_s):
        report = run_once()
        total.merge(report)
        if on_cycle is not None and report.did_something:
            on_cycle(report)
    total.stopped = True  # asked to stop: what a stop under way left is pending for the next run
    return total
