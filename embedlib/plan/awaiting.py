"""Rows whose text this run is encoding already: held until that text's batch is written.

A text can come back in a later window while the batch that encodes it is
still on its way through the model and the writers. Its rows then need the
vector that batch is about to store. They wait here, and the planner takes
them back (``ready``) as the pass tells of each batch written (``settled``),
before its last window's batches are even done: no second pass over the
table, and no time spent once the writes are over (from a distant database
the second pass cost a lookup and a write after all the others).

One ``InFlight`` serves a whole run: the writers report to it from their
threads, whatever the executor, and each pass's planner waits on it. It
remembers the last ``recent`` texts written, enough to cover every batch in
flight. A batch that never reports (an executor that failed) must not hold
the pass: when no batch has been written for ``QUIET_S`` the planner stops
waiting and leaves the rest for a later pass.
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
        self._settled: OrderedDict[str, None] = OrderedDict()  # texts written lately, oldest first
        self._recent = recent
        self._news = threading.Condition()
        self._last_news = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def wait_for(self, group: TextGroup) -> None:
        """Hold ``group``'s rows until its text's batch is written (rows of one text join)."""
        with self._news:
            held = self._waiting.get(group.text_hash)
            if held is None:
                self._waiting[group.text_hash] = group
                return
            held.ids += group.ids
            held.stored = held.stored or group.stored
            if held.seqs is not None and group.seqs is not None:
                held.seqs += group.seqs

    def settled(self, text_hashes: Iterable[str]) -> None:
        """The texts of a batch just written (its vectors stored, or its failures recorded)."""
        with self._news:
            for text_hash in text_hashes:
                self._settled[text_hash] = None
            while len(self._settled) > self._recent:
                self._settled.popitem(last=False)
            self._last_news = time.monotonic()
            self._news.notify_all()

    def ready(self) -> list[TextGroup] | None:
        """The waiting groups whose batch is written, once there are some; None when nothing is
        waiting any more, or when no batch has been written for ``QUIET_S``."""
        with self._news:
            while self._waiting:
                done = [h for h in self._waiting if h in self._settled]
                if done:
                    return [self._waiting.pop(h) for h in done]
                if time.monotonic() - self._last_news > QUIET_S:
                    return None
                self._news.wait(0.05)
            return None

    def give_up(self) -> list[TextGroup]:
        """What still waits: for a later pass."""
        with self._news:
            left, self._waiting = list(self._waiting.values()), {}
            return left
