"""Rows whose text this run is encoding already: held until that text's batch is written.

A text can come back in a later window while the batch that encodes it is
still on its way through the model and the writers. Its rows then need the
vector that batch is about to store. They wait here; the writers report each
batch they write (``settled``), and the planner takes the rows whose text is
written (``ready``) after each window, and at the end of its windows waits
for the rest: no second pass over the table (from a distant database the
second pass cost a lookup and a write after all the others).

One ``InFlight`` serves a whole run: the writers report to it from their
threads, whatever the executor, and each pass's planner waits on it. It
counts the batches the planner sends and the writers report, so the planner
waits exactly while some are under way. A batch that never reports (an
executor that failed, or stopped early) must not hold the pass: when none
has been reported for a while (``QUIET_S``, or four times the longest wait
between reports so far, the more) the planner leaves the rest for a later pass.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from embedlib.plan.batching import TextGroup

QUIET_S = 2.0


class InFlight:
    """Groups waiting for their text's vector, by text hash. Thread-safe: the writers report on
    their threads, the planner waits on its own."""

    def __init__(self, recent: int = 50_000) -> None:
        self._waiting: dict[str, TextGroup] = {}
        self._written: set[str] = set()  # waiting texts whose batch is written
        # Texts written lately that nothing waited for (yet): a window planned while its batch
        # was being written may ask for one a moment later.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._keep = recent
        self._sent = self._reported = 0  # batches
        self._news = threading.Condition()
        self._last_news = time.monotonic()
        self._longest_gap = 0.0

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def sent(self) -> None:
        """The planner sent a batch on its way (one that ``settled`` will be told of)."""
        with self._news:
            self._sent += 1

    def wait_for(self, group: TextGroup) -> None:
        """Hold ``group``'s rows until its text's batch is written (rows of one text join)."""
        with self._news:
            held = self._waiting.get(group.text_hash)
            if held is None:
                self._waiting[group.text_hash] = group
                if group.text_hash in self._recent:
                    self._written.add(group.text_hash)
                return
            held.ids += group.ids
            held.stored = held.stored or group.stored
            if held.seqs is not None and group.seqs is not None:
                held.seqs += group.seqs

    def settled(self, text_hashes: Iterable[str]) -> None:
        """The texts of a batch just written (its vectors stored, or its failures recorded)."""
        with self._news:
            for text_hash in text_hashes:
                if text_hash in self._waiting:
                    self._written.add(text_hash)
                else:
                    self._recent[text_hash] = None
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
            self._reported += 1
            now = time.monotonic()
            self._longest_gap = max(self._longest_gap, now - self._last_news)
            self._last_news = now
            self._news.notify_all()

    def ready(self, *, wait: bool) -> list[TextGroup] | None:
        """The waiting groups whose batch is written. ``wait``: until there are some; None once
        nothing waits, no batch is under way, or none has been reported for too long."""
        with self._news:
            while self._waiting:
                if self._written:
                    done, self._written = self._written, set()
                    return [self._waiting.pop(h) for h in done]
                if not wait:
                    return []
                patience = max(QUIET_S, 4 * self._longest_gap)
                if self._reported >= self._sent or time.monotonic() - self._last_news > patience:
                    return None
                self._news.wait(0.05)
            return None if wait else []

    def give_up(self) -> list[TextGroup]:
        """What still waits: for a later pass."""
        with self._news:
            left, self._waiting, self._written = list(self._waiting.values()), {}, set()
            return left
