"""Rows of a text in flight wait for its batch, and are let go when it is written, or when nothing is."""

from __future__ import annotations

import threading
import time

from embedlib.plan import awaiting
from embedlib.plan.awaiting import InFlight
from embedlib.plan.batching import TextGroup


def group(text_hash: str, *ids: str) -> TextGroup:
    return TextGroup(text_hash, f"text {text_hash}", list(ids), stored=False)


def test_rows_of_one_text_join_and_are_ready_once_their_batch_is_written():
    in_flight = InFlight()
    in_flight.sent()  # the batches holding "a" and "b"
    in_flight.sent()
    in_flight.wait_for(group("a", "1"))
    in_flight.wait_for(group("b", "2"))
    in_flight.wait_for(group("a", "3"))
    assert in_flight.ready(wait=False) == []  # nothing written yet
    writer = threading.Timer(0.1, in_flight.settled, args=(["a", "x"],))
    writer.start()
    ready = in_flight.ready(wait=True)  # waits for the writer
    assert ready is not None and [(g.text_hash, g.ids) for g in ready] == [("a", ["1", "3"])]
    in_flight.settled(["b"])
    ready = in_flight.ready(wait=True)
    assert ready is not None and [g.ids for g in ready] == [["2"]]
    assert in_flight.ready(wait=True) is None and not in_flight


def test_a_text_written_just_before_its_rows_came_is_ready_at_once():
    in_flight = InFlight(recent=2)
    in_flight.sent()
    in_flight.settled(["a", "b", "c"])  # "a" is forgotten: only the last two are kept
    in_flight.wait_for(group("c", "1"))
    ready = in_flight.ready(wait=False)
    assert ready is not None and [g.text_hash for g in ready] == ["c"]
    in_flight.wait_for(group("a", "2"))
    assert in_flight.ready(wait=True) is None  # every batch sent is written: "a" will not come
    assert [g.ids for g in in_flight.give_up()] == [["2"]]


def test_a_batch_that_never_reports_lets_the_rows_go_to_a_later_pass(monkeypatch):
    monkeypatch.setattr(awaiting, "QUIET_S", 0.2)
    in_flight = InFlight()
    in_flight.sent()  # an executor that fails will never report it
    in_flight.wait_for(group("a", "1"))
    started = time.monotonic()
    assert in_flight.ready(wait=True) is None
    assert 0.1 < time.monotonic() - started < 5
    assert [g.ids for g in in_flight.give_up()] == [["1"]]
