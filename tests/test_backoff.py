"""The one retry policy: waits double up to a ceiling, end at a total, take a Retry-After, spread with jitter."""

from __future__ import annotations

import itertools

import pytest

from embedlib import backoff as backoff_module
from embedlib.backoff import Backoff


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock that moves only when the test moves it: now[0]."""
    now = [100.0]
    monkeypatch.setattr(backoff_module.time, "monotonic", lambda: now[0])
    return now


def test_waits_double_up_to_the_ceiling_and_stop_at_the_total(clock):
    backoff = Backoff(0.5, 4.0, total=10.0)
    waits = []
    for _ in range(10):
        wait = backoff.next_wait()
        if wait is None:
            break
        waits.append(wait)
        clock[0] += wait
    assert waits == [0.5, 1.0, 2.0, 4.0]  # a fifth (4.0) would end at 11.5 s, past 10
    assert backoff.waited == pytest.approx(7.5)


def test_a_wait_the_other_side_asked_for_is_taken_if_it_fits(clock):
    backoff = Backoff(0.5, 8.0, total=5.0)
    assert backoff.next_wait(at_least=3.0) == 3.0
    clock[0] += 3.0
    assert backoff.next_wait(at_least=3.0) is None  # 6 s in all: past the total


def test_jitter_spreads_waits_within_its_band(clock):
    waits = [Backoff(1.0, 1.0, jitter=0.2).next_wait() for _ in range(200)]
    assert all(0.8 <= wait <= 1.2 for wait in waits)  # type: ignore[operator]
    assert len(set(waits)) > 100  # spread, not one value
    full = list(itertools.islice((Backoff(0.1, 0.1, jitter=1.0).next_wait() for _ in itertools.count()), 200))
    assert min(full) < 0.02 and max(full) > 0.18  # type: ignore[type-var]


def test_a_nonsense_wait_asked_for_is_ignored(clock):
    for nonsense in (float("nan"), float("inf"), -3.0):
        assert Backoff(0.5, 8.0, total=60.0).next_wait(at_least=nonsense) == 0.5
