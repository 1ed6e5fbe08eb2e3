"""Choose how many batches run at once from the throughput measured while running.

The original design left this as future work: the right worker count
depends on where the time goes (a model on the local CPU gains nothing from
more workers, a remote service or a distant database gains almost linearly),
and the user cannot know which before running. So the threaded executor can
start low and climb:

- climbing: double the concurrency after each measuring period while the rate
  of rows rises by at least ``gain`` (10%); when it does not, go back to the
  best level seen and hold it;
- holding: every ``probe_every`` periods, try one step up (or one step down
  after a probe up failed); keep a step up only if it pays ``gain``, a step
  down only if it costs nothing measurable (3%).
  So a run whose bottleneck moves (another run starts on the same server,
  say) follows it.

A period lasts at least ``period_s`` and at least two batches per worker, so
one slow batch does not decide. ``steps`` records every level used, and
``chosen`` the level held at the end: the report shows both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_NOT_WORSE = 0.97


class Autoscaler:
    def __init__(
        self,
        max_workers: int,
        *,
        start: int = 1,
        period_s: float = 1.0,
        gain: float = 1.1,
        probe_every: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.max_workers = max_workers
        self.limit = min(start, max_workers)
        self.period_s = period_s
        self.gain = gain
        self.probe_every = probe_every
        self._clock = clock
        self.steps = [self.limit]
        self._climbing = True
        self._best: tuple[int, float] = (self.limit, 0.0)  # while climbing: the best (level, rows/s) yet
        self._probe_from: tuple[int, float] | None = None  # where a probe started, to go back to
        self._probe_up = True
        self._held_periods = 0
        self._begin_period()

    @property
    def chosen(self) -> int:
        return self._probe_from[0] if self._probe_from else self.limit

    def record(self, rows: int) -> None:
        """A batch of ``rows`` rows finished."""
        self._rows += rows
        self._batches += 1
        elapsed = self._clock() - self._started
        if elapsed >= self.period_s and self._batches >= 2 * self.limit:
            self._decide(self._rows / elapsed)
            self._begin_period()

    def _begin_period(self) -> None:
        self._started = self._clock()
        self._rows = 0
        self._batches = 0

    def _decide(self, rate: float) -> None:
        level = self.limit
        if self._climbing:
            if rate >= self._best[1] * self.gain or self._best[1] == 0:
                self._best = (level, rate)
                if level < self.max_workers:
                    self._move_to(min(self.max_workers, level * 2))
                    return
            self._climbing = False
            self._move_to(self._best[0])
        elif self._probe_from is not None:  # a probe's period has ended: keep it or go back
            start_level, start_rate = self._probe_from
            self._probe_from = None
            # Up must pay its gain; down need only not cost (fewer connections, same rows/s).
            if rate < start_rate * (self.gain if level > start_level else _NOT_WORSE):
                self._probe_up = not self._probe_up  # try the other way next time
                self._move_to(start_level)
        else:
            self._held_periods += 1
            if self._held_periods % self.probe_every == 0:
                target = level + 1 if self._probe_up else level - 1
                if 1 <= target <= self.max_workers:
                    self._probe_from = (level, rate)
                    self._move_to(target)
                else:
                    self._probe_up = not self._probe_up

    def _move_to(self, level: int) -> None:
        if level != self.limit:
            self.limit = level
            self.steps.append(level)
