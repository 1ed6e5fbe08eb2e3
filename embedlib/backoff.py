"""One retry policy for every loop that waits and tries again.

A lost connection, a deadlock, a service that answers 503 and rows another
run is still writing all call for the same thing: wait a little, then
longer, up to a ceiling, and give up (or change course) once a total time
has passed. ``Backoff`` is that policy as a small object, one per retried
thing, in the manner of psycopg_pool's ``ConnectionAttempt``.
"""

from __future__ import annotations

import math
import random
import time


class Backoff:
    """Waits that start at ``first`` seconds and double up to ``most``, within ``total`` seconds.

    ``jitter`` scales each wait by a random factor in ``[1 - jitter, 1 + jitter]``
    (1.0: anywhere from nothing to twice), so that clients that failed together
    retry apart. ``waited`` is the sum of the waits handed out.
    """

    def __init__(self, first: float, most: float, *, total: float = math.inf, jitter: float = 0.0) -> None:
        self._next = first
        self._most = most
        self._total = total
        self._jitter = jitter
        self._started = time.monotonic()
        self.waited = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def next_wait(self, at_least: float | None = None) -> float | None:
        """The next wait (``at_least`` when the other side said how long: a Retry-After), or None
        when it would end past ``total``: time to give up."""
        wait = self._next
        if at_least is not None and math.isfinite(at_least) and at_least >= 0:  # NaN or -3 is no wait
            wait = at_least
        if self.elapsed + wait > self._total:
            return None
        self._next = min(2 * self._next, self._most)
        if self._jitter:
            wait *= random.uniform(1 - self._jitter, 1 + self._jitter)
        self.waited += wait
        return wait

    def sleep(self, at_least: float | None = None) -> bool:
        """Sleep the next wait; False (without sleeping) when time is up."""
        wait = self.next_wait(at_least)
        if wait is None:
            return False
        time.sleep(wait)
        return True
