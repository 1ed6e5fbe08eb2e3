"""Encoding through an OpenAI-compatible embeddings service (a real HTTP server on loopback).

The service (``embedlib.testing.service``) answers with HashEncoder vectors, so
every stored vector can be checked exactly; it fails on purpose where a
test says so, to exercise retries.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from embedlib import Ingestor, ModelError
from embedlib.encode import remote as remote_module
from embedlib.encode import replies
from embedlib.encode.remote import RemoteEncoder, remote_label
from embedlib.errors import EncoderUnavailable
from embedlib.testing import HashEncoder
from embedlib.testing.service import EmbeddingService
from tests.processes import assert_clean_failure, run_cli

TEXTS = [f"remote sentence number {i}" for i in range(300)]


@pytest.fixture
def service():
    with EmbeddingService() as running:
        yield running


def test_vectors_come_back_in_input_order_in_either_format(service):
    expected = HashEncoder(384).encode(TEXTS[:70])
    for formats in (("float", "base64"), ("float",)):  # a service that knows only floats gets floats
        service.formats = formats
        encoder = RemoteEncoder(service.url, max_inputs=32)
        assert encoder.encoding_format == formats[-1]
        assert encoder.dimension == 384
        np.testing.assert_allclose(encoder.encode(TEXTS[:70]), expected, atol=1e-6)
    # Out-of-order items (the API gives each an index) are put back in order; with no index at all, as listed.
    shuffled = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}
    np.testing.assert_array_equal(replies.vectors_of(shuffled, 2, "x"), [[1.0, 0.0], [0.0, 1.0]])
    unindexed = {"data": [{"embedding": [0.0, 1.0]}, {"embedding": [1, 0]}]}
    np.testing.assert_array_equal(replies.vectors_of(unindexed, 2, "x", 2), [[0.0, 1.0], [1.0, 0.0]])
    # A reply that is not the vectors asked for is the service's fault: the run stops (see test_service_faults).
    for payload, said in [
        ({"data": [{"index": 0, "embedding": [1.0]}]}, "sent 1 vectors for 2 texts"),
        ({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"embedding": [0.0, 1.0]}]}, r"indices \[0, None\]"),
        ({"data": [{"index": 0, "embedding": [True, False]}, {"index": 1, "embedding": [1.0, 0.0]}]}, "numbers"),
        (shuffled, "vectors of 2 dimensions, not 3 as at first"),
    ]:
        with pytest.raises(EncoderUnavailable, match=said):
            replies.vectors_of(payload, 2, "x", 3 if "not 3" in said else None)


def test_requests_are_batched_and_carry_the_model_name_and_key(service, monkeypatch):
    monkeypatch.setenv("EMBEDLIB_API_KEY", "sk-secret-key")
    encoder = RemoteEncoder(f"{service.url}#text-embedding-test", max_inputs=32)
    before = service.requests
    encoder.encode(TEXTS[:100])
    assert service.requests - before == 4  # 32 + 32 + 32 + 4
    assert service.seen_models == {"text-embedding-test"}
    assert service.authorizations == {"Bearer sk-secret-key"}
    assert encoder.name == "text-embedding-test"
    assert remote_label("http://user@host:8080/v1/") == "http://host:8080/v1"


def test_retries_429_and_5xx_then_gives_up_with_one_line(service, monkeypatch):
    monkeypatch.setattr(remote_module, "_BACKOFF_S", (0.01, 0.05))
    encoder = RemoteEncoder(service.url, retry_s=1.0)
    service.fail_next(2, 503)
    service.fail_next(1, 429)
    np.testing.assert_allclose(encoder.encode(["a"]), HashEncoder(384).encode(["a"]), atol=1e-6)
    assert encoder.retries == 3
    service.fail_next(1000, 502)
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"failed for 1 s: HTTP 502") as failure:
        encoder.encode(["a"])
    assert time.monotonic() - started < 3
    assert "\n" not in str(failure.value)
    service.heal()
    service.fail_next(1, 400)  # the request is wrong: no retry
    with pytest.raises(ModelError, match="refused the request: HTTP 400 failing on purpose"):
        encoder.encode(["a"])


def test_ingest_through_a_service_stores_its_vectors_from_concurrent_requests(dsn, tables, service):
    table = tables.source(TEXTS)
    service.latency_s = 0.02  # long enough for requests to overlap
    report = Ingestor(dsn, table=table, model=f"{service.url}#hash-service", batch_size=20, workers=4).run()
    assert (report.rows, report.encoded, report.executor, report.workers) == (300, 300, "pipelined", 4)
    assert service.max_in_flight == 4  # one encoder thread per worker, each with a request out
    stored = tables.embeddings(table)
    expected = HashEncoder(384).encode(TEXTS)
    for row_id, vector in stored.items():
        np.testing.assert_allclose(vector, expected[int(row_id) - 1], atol=1e-6)
    rows = tables.rows(table, "model, token_count")
    assert {model for model, _ in rows} == {"hash-service"}
    assert {tokens for _, tokens in rows} == {None}  # the service's tokenizer is unknown: NULL, not a guess


def test_cli_with_an_unreachable_service_fails_in_one_line_without_the_key(dsn, tables):
    table = tables.source(TEXTS[:5])
    result = run_cli(
        "ingest", table, "--model", "http://127.0.0.1:9/v1#m", dsn=dsn, env={"OPENAI_API_KEY": "sk-not-to-be-shown"}
    )
    assert_clean_failure(result, "embeddings service 'm'", "cannot reach it")
    assert "sk-not-to-be-shown" not in result.stderr
    assert_clean_failure(run_cli("ingest", table, "--model", "http://user:pw@host/v1", dsn=dsn), "EMBEDLIB_API_KEY")


def test_cli_ingest_through_a_service_prints_the_report(dsn, tables, service):
    table = tables.source(TEXTS[:50])
    result = run_cli("ingest", table, "10", "--model", service.url, "--workers", "3", "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["executor"], report["workers"], report["model"]) == (50, "pipelined", 3, service.url)


def test_a_text_the_service_refuses_is_recorded_and_a_service_down_stops_the_run(dsn, tables, service, conn):
    table = tables.source(TEXTS[:60])
    service.rejected = {TEXTS[7]}
    report = Ingestor(dsn, table=table, model=service.url, batch_size=20, workers=2).run()
    assert (report.rows, report.failed) == (59, 1)
    with conn.cursor() as cur:
        cur.execute(f'SELECT id, error FROM "{table}_embedding_errors"')
        [(row_id, error)] = cur.fetchall()
    assert row_id == 8 and "HTTP 400" in error

    service.rejected = set()
    down = tables.source(TEXTS[:60])
    encoder = RemoteEncoder(service.url, retry_s=0.3)
    service.fail_next(10_000, 503)
    with pytest.raises(EncoderUnavailable, match=r"failed for 0\.3 s: HTTP 503"):
        Ingestor(dsn, table=down, model=encoder, batch_size=20).run()
    with conn.cursor() as cur:  # no text is blamed for a service that is down
        cur.execute(f'SELECT count(*) FROM "{down}_embedding_errors"')
        assert cur.fetchone()[0] == 0
    service.heal()
    assert Ingestor(dsn, table=down, model=encoder, batch_size=20).run().rows == 60
