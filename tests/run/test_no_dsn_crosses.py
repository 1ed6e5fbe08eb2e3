"""The DSN, and the password in it, never leaves the driver process: child processes and Ray actors
only encode, so nothing sent to them needs it (and a run holds 1 + writers connections)."""

from __future__ import annotations

import pickle
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg2.extensions
import pytest

from embedlib import Ingestor
from embedlib.testing import HashEncoder


def dsn_with_password(dsn: str) -> tuple[str, str]:
    """``dsn`` with a password: its own if it has one, else a made-up one (the test server trusts)."""
    password = psycopg2.extensions.parse_dsn(dsn).get("password") or f"pw-{uuid.uuid4().hex}"
    return psycopg2.extensions.make_dsn(dsn, password=password), password


def recording(original: Callable[..., Any], sent: list[bytes], dumps: Callable[[Any], bytes]) -> Callable[..., Any]:
    """``original``, with what it is given (all but ``self``) recorded as the bytes that would travel."""

    def record(first: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            sent.append(dumps((args, kwargs)))
        except Exception:  # an object reference that pickles only inside Ray: its repr is what there is
            sent.append(repr((args, kwargs)).encode())
        return original(first, *args, **kwargs)

    return record


def holding(sent: list[bytes], password: str) -> list[bytes]:
    forms = {password, urllib.parse.quote(password, safe="")}
    return [blob for blob in sent if any(form.encode() in blob for form in forms)]


def test_nothing_sent_to_ray_actors_holds_the_password(dsn, tables, monkeypatch):
    ray = pytest.importorskip("ray", reason="the ray executor needs the optional extra embedlib[ray]")
    actor = pytest.importorskip("ray.actor")
    import cloudpickle  # Ray's own serializer, installed with it

    secret_dsn, password = dsn_with_password(dsn)
    sent: list[bytes] = []
    put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: sent.append(cloudpickle.dumps(value)) or put(value, **kw))
    for cls in (actor.ActorClass, actor.ActorMethod):  # actors made, and every call to them
        monkeypatch.setattr(cls, "remote", recording(cls.remote, sent, cloudpickle.dumps))
    table = tables.source([f"text number {i}" for i in range(60)])
    report = Ingestor(secret_dsn, table=table, model=HashEncoder(), executor="ray", workers=2, batch_size=10).run()
    assert (report.rows, report.executor) == (60, "ray")
    assert len(sent) >= 2 + 6  # the step's factory, the actors, and a call per batch at least
    assert holding(sent, password) == []


def test_nothing_sent_to_worker_processes_holds_the_password(dsn, tables, monkeypatch):
    secret_dsn, password = dsn_with_password(dsn)
    sent: list[bytes] = []
    monkeypatch.setattr(ProcessPoolExecutor, "submit", recording(ProcessPoolExecutor.submit, sent, pickle.dumps))
    table = tables.source([f"text number {i}" for i in range(60)])
    report = Ingestor(secret_dsn, table=table, model=HashEncoder(), executor="process", workers=2, batch_size=10).run()
    assert (report.rows, report.executor) == (60, "process")
    assert len(sent) >= 6  # a call per batch at least
    assert holding(sent, password) == []
