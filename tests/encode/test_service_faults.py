"""An embeddings service that answers nonsense: nothing wrong is stored, no "internal error", no key shown.

The service here is a real HTTP server on loopback that answers well (with
HashEncoder vectors, so every stored vector can be checked exactly) for its
first ``good`` requests (the dimension probe is the first), then as the test
says. Runs go through the real CLI or ``Ingestor`` against the real
PostgreSQL. See ``embedlib.encode.remote``'s docstring for which nonsense stops the
run (a service fault: exit 2, one line, no row blamed) and which fails rows
(a zero or non-finite vector: recorded in the errors table).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.encode.failures import NON_FINITE, ZERO_VECTOR, describe, unstorable_rows
from embedlib.encode.remote import RemoteEncoder
from embedlib.errors import EncoderUnavailable
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli

DIMENSION = 16
ENCODER = HashEncoder(DIMENSION)
TEXTS = [f"service fault sentence {i}" for i in range(20)]
BATCH = 5  # texts per batch, and per request: the first batch is the second request
KEY = "sk-embedlib-fault-test-7Qx9vR2mLp4"

Reply = tuple[int, str, bytes]  # status, Content-Type, body
# What the service answers once its good requests are spent: (texts, encoding_format, Authorization) -> Reply
Nonsense = Callable[[list[str], str, str], Reply]


def as_sent(vector: np.ndarray | list[float], encoding_format: str) -> str | list[float]:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(value) for value in vector]


def items(vectors: Any, encoding_format: str, indices: list[Any] | None = None) -> list[dict[str, Any]]:
    indices = list(range(len(vectors))) if indices is None else indices
    return [
        {"object": "embedding", "index": index, "embedding": as_sent(vector, encoding_format)}
        for index, vector in zip(indices, vectors, strict=True)
    ]


def json_reply(payload: object, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(payload).encode()  # NaN and inf as Python writes them


def good_reply(texts: list[str], encoding_format: str) -> Reply:
    return json_reply({"object": "list", "data": items(ENCODER.encode(texts), encoding_format)})


class NonsenseService:
    """Answers its first ``good`` requests well, then with ``nonsense`` (or well where that returns None)."""

    def __init__(self) -> None:
        self.good = 1 << 30
        self.nonsense: Callable[..., Reply | None] | None = None
        self.requests = 0  # since the last ``after``
        self.location = ""  # sent with a 3xx
        self.elsewhere: list[str] = []  # the Authorization of each request redirected here
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def after(self, good: int, nonsense: Callable[..., Reply | None]) -> NonsenseService:
        with self._lock:
            self.good, self.nonsense, self.requests = good, nonsense, 0
        return self

    def mend(self) -> NonsenseService:
        with self._lock:
            self.nonsense = None
        return self

    def once(self, nonsense: Nonsense) -> Callable[..., Reply]:
        """``nonsense`` for one request, then good answers."""

        def first(*args: Any) -> Reply:
            self.mend()
            return nonsense(*args)

        return first

    def answer(self, body: dict[str, Any], authorization: str) -> Reply:
        with self._lock:
            self.requests += 1
            number = self.requests
        texts, encoding_format = body["input"], body.get("encoding_format", "float")
        if number > self.good and self.nonsense is not None:
            reply = self.nonsense(texts, encoding_format, authorization)
            if reply is not None:
                return reply
        return good_reply(texts, encoding_format)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(service: NonsenseService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            status, content_type, data = service.answer(body, self.headers.get("Authorization", ""))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if 300 <= status < 400:
                self.send_header("Location", service.location)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # where a redirect points: it must never be reached
            service.elsewhere.append(self.headers.get("Authorization", ""))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def service() -> Iterator[NonsenseService]:
    running = NonsenseService()
    yield running
    running.close()


def stored_rows_are_right(tables: Any, table: str, texts: list[str]) -> dict[str, np.ndarray]:
    """The target's vectors, each checked against its own text's (so no wrong vector is among them)."""
    stored = tables.embeddings(table)
    for row_id, vector in stored.items():
        np.testing.assert_allclose(vector, ENCODER.encode([texts[int(row_id) - 1]])[0], atol=1e-6)
    return stored


def error_rows(conn: Any, table: str) -> list[tuple[int, str]]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, error FROM {} ORDER BY id").format(sql.Identifier(f"{table}_embedding_errors")))
        return cur.fetchall()


def every_cell(conn: Any, table: str) -> str:
    """Every column of every row of ``table``, as text ("" where there is no such table)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{table}"',))
        if cur.fetchone()[0] is None:
            return ""
        cur.execute(
            sql.SQL("SELECT coalesce(string_agg(row_to_json(t)::text, ' '), '') FROM {} t").format(
                sql.Identifier(table)
            )
        )
        return str(cur.fetchone()[0])


# The nonsense a service may answer with, after good answers; each stops the run: (nonsense, what the line says).
def html(texts: list[str], encoding_format: str, authorization: str) -> Reply:
    return 200, "text/html; charset=utf-8", b"<!DOCTYPE html><html><body><h1>Please log in</h1></body></html>"


def every_index_zero_and_the_first_vector(texts: list[str], encoding_format: str, authorization: str) -> Reply:
    """A service that embeds the first input only, once per input, each at index 0."""
    first = ENCODER.encode(texts[:1])[0]
    return json_reply({"data": items([first] * len(texts), encoding_format, [0] * len(texts))})


def permuted(indices: Callable[[int], list[Any]]) -> Nonsense:
    """Right vectors, listed in reverse, at the indices given (for n texts)."""

    def nonsense(texts: list[str], encoding_format: str, authorization: str) -> Reply:
        vectors = ENCODER.encode(texts)[::-1]
        return json_reply({"data": items(vectors, encoding_format, indices(len(texts)))})

    return nonsense


def vectors_of(change: Callable[[np.ndarray], list[Any]]) -> Nonsense:
    """Each text's vector, changed as given, sent as floats whatever was asked."""

    def nonsense(texts: list[str], encoding_format: str, authorization: str) -> Reply:
        vectors = [change(vector) for vector in ENCODER.encode(texts)]
        return json_reply({"data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]})

    return nonsense


def payload(made: Callable[[list[str]], object]) -> Nonsense:
    return lambda texts, encoding_format, authorization: json_reply(made(texts))


def floats(vector: np.ndarray) -> list[float]:
    return [float(value) for value in vector]


FAULTS: dict[str, tuple[Nonsense, str]] = {
    "html": (html, "sent text/html, not JSON: '<!DOCTYPE html>"),
    "plain text": (lambda *_: (200, "text/plain", b"OK"), "sent text/plain, not JSON: 'OK'"),
    "empty body": (
        lambda *_: (200, "application/json", b""),
        "sent JSON that does not parse (application/json) (empty)",
    ),
    "a JSON list": (payload(lambda texts: [1, 2, 3]), "sent JSON that is not an embeddings list (a list)"),
    "no data": (payload(lambda texts: {"object": "list"}), "no 'data' list"),
    "an error on a 200": (payload(lambda texts: {"error": {"message": "model overloaded"}}), "model overloaded"),
    "embedding a dict": (vectors_of(lambda v: {"values": floats(v)}), "not a list of numbers (a dict)"),
    "strings in the list": (vectors_of(lambda v: [str(x) for x in v]), "not a list of numbers"),
    "nulls in the list": (vectors_of(lambda v: [None, *floats(v)[1:]]), "not a list of numbers"),
    "nested lists": (vectors_of(lambda v: [floats(v)]), "not a list of numbers"),
    "bad base64": (vectors_of(lambda v: "not base64!"), "not valid base64"),
    "base64 of 3 bytes": (vectors_of(lambda v: base64.b64encode(b"abc").decode()), "not whole float32 values"),
    "another dimension": (vectors_of(lambda v: floats(np.resize(v, 24))), "vectors of 24 dimensions, not 16"),
    "unequal lengths": (
        payload(lambda texts: {"data": items([np.ones(16), np.ones(15)] + [np.ones(16)] * (len(texts) - 2), "float")}),
        "vectors of unequal lengths (15, 16)",
    ),
    "every index 0": (every_index_zero_and_the_first_vector, "indices [0, 0, 0, 0, 0] for 5 texts"),
    "duplicated indices": (permuted(lambda n: [0, 1, 1, *range(3, n)]), "indices [0, 1, 1, 3, 4] for 5 texts"),
    "indices out of range": (permuted(lambda n: list(range(n, 0, -1))), "indices [5, 4, 3, 2, 1] for 5 texts"),
    "indices as strings": (permuted(lambda n: [str(n - 1 - i) for i in range(n)]), "indices ['4', '3', '2'"),
    "some indices missing": (permuted(lambda n: [None, *range(1, n)]), "indices [None, 1, 2, 3, 4]"),
    "one vector too many": (
        payload(lambda texts: {"data": items(ENCODER.encode([*texts, "extra"]), "float")}),
        "sent 6 vectors for 5 texts",
    ),
    "one vector too few": (
        payload(lambda texts: {"data": items(ENCODER.encode(texts[1:]), "float")}),
        "sent 4 vectors",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_service_answering_nonsense_mid_run_stops_it_with_nothing_wrong_stored(dsn, conn, tables, service, fault):
    nonsense, said = FAULTS[fault]
    table = tables.source(TEXTS)
    service.after(2, nonsense)  # the probe and the first batch are answered well
    encoder = RemoteEncoder(service.url, max_inputs=BATCH, retry_s=0.2)
    with pytest.raises(EncoderUnavailable) as stopped:
        Ingestor(dsn, table=table, model=encoder, batch_size=BATCH, workers=1).run()
    message = str(stopped.value)
    assert message.startswith(f"the embeddings service {service.url!r} sent ") and "\n" not in message
    assert said in message
    stored = stored_rows_are_right(tables, table, TEXTS)  # the first batch's, if it was written: right
    assert len(stored) <= BATCH
    assert error_rows(conn, table) == []  # the service is to blame, not the texts
    Ingestor(dsn, table=table, model=RemoteEncoder(service.mend().url), batch_size=BATCH).run()
    assert len(stored_rows_are_right(tables, table, TEXTS)) == len(TEXTS)  # a later run, the service mended


@pytest.mark.parametrize("fault", ["html", "every index 0", "another dimension", "strings in the list"])
def test_nonsense_through_the_cli_is_one_line_and_exit_2(dsn, conn, tables, service, fault):
    nonsense, said = FAULTS[fault]
    table = tables.source(TEXTS)
    service.after(2, nonsense)
    result = run_cli(
        "ingest", table, "--model", service.url, "--batch-size", str(BATCH), "--workers", "1", "--quiet", dsn=dsn
    )
    stored = tables.embeddings(table)
    assert len({vector.tobytes() for vector in stored.values()}) == len(stored)  # no two rows given one vector
    stored_rows_are_right(tables, table, TEXTS)
    assert error_rows(conn, table) == []
    assert_clean_failure(result, f"embedlib: error: the embeddings service {service.url!r} sent ", said)
    assert "internal error" not in result.stderr


def test_html_at_first_contact_is_one_line_and_exit_2(dsn, tables, service):
    table = tables.source(TEXTS[:3])
    result = run_cli("ingest", table, "--model", service.after(0, html).url, dsn=dsn)
    assert_clean_failure(result, f"the embeddings service {service.url!r} sent text/html, not JSON")
    with tables.conn.cursor() as cur:  # not even made
        cur.execute("SELECT to_regclass(%s)", (f"{table}_embeddings",))
        assert cur.fetchone()[0] is None


def test_a_redirect_stops_the_run_and_the_key_goes_no_further(service, monkeypatch):
    monkeypatch.setenv("EMBEDLIB_API_KEY", KEY)
    elsewhere = service.url.replace("/v1", "/elsewhere")
    service.after(0, lambda *_: (302, "text/plain", b""))
    service.location = elsewhere
    with pytest.raises(EncoderUnavailable, match=rf"redirected the request \(HTTP 302\) to {elsewhere}"):
        RemoteEncoder(service.url)
    assert (service.requests, service.elsewhere) == (1, [])


def read_request(connection: socket.socket) -> None:
    """Read one HTTP request (headers, then Content-Length bytes of body) off ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length:\s*(\d+)", head, re.I)
    while length and len(body) < int(length.group(1)):
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (b"this is not HTTP\r\n\r\n", "sent a broken reply (BadStatusLine"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
            "sent a broken reply (IncompleteRead",
        ),
    ],
    ids=["not HTTP", "cut short"],
)
def test_a_reply_that_is_not_http_or_cut_short_is_retried_then_stops_the_run(reply, said):
    listener = socket.create_server(("127.0.0.1", 0))
    answered = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                read_request(connection)  # all of it: closing on unread bytes would reset the connection
                answered.append(1)  # before the reply: once the client has it, the count is there
                connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(EncoderUnavailable, match=re.escape(f"failed for 0.3 s: {said}")):
            RemoteEncoder(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", retry_s=0.3)
        assert len(answered) >= 1
    finally:
        listener.close()


def unembeddable(texts: list[str], encoding_format: str, authorization: str) -> Reply:
    """Vectors a service may send for some texts: zero, NaN, infinity, or too small for float16."""
    vectors = ENCODER.encode(texts)
    for i, text in enumerate(texts):
        if "zero" in text:
            vectors[i] = 0.0
        elif "nan" in text:
            vectors[i, 3] = np.nan
        elif "inf" in text:
            vectors[i, 5] = -np.inf
        elif "tiny" in text:
            vectors[i] = 1e-9  # not zero in float32; zero in float16
    return json_reply({"object": "list", "data": items(vectors, encoding_format)})


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
@pytest.mark.parametrize("dtype", ["float", "half"])
def test_zero_and_non_finite_vectors_are_recorded_as_failed_rows(dsn, conn, tables, service, encoding_format, dtype):
    texts = [*TEXTS[:8], "a zero row", "a nan row", "an inf row", "a tiny row", *TEXTS[8:12]]
    table = tables.source(texts)
    service.after(1, unembeddable)
    encoder = RemoteEncoder(service.url, retry_s=0.2)
    encoder.encoding_format = encoding_format  # float: NaN and Infinity as JSON literals, which Python reads
    report = Ingestor(dsn, table=table, model=encoder, batch_size=BATCH, dtype=dtype).run()
    tiny_fails = dtype == "half"
    assert (report.failed, report.rows) == (3 + tiny_fails, len(texts) - 3 - tiny_fails)
    expected = [(9, ZERO_VECTOR), (10, NON_FINITE), (11, NON_FINITE)] + [(12, ZERO_VECTOR)] * tiny_fails
    assert [(row_id, error) for row_id, error in error_rows(conn, table)] == expected
    stored = tables.embeddings(table)
    assert set(stored) == {str(i) for i in range(1, len(texts) + 1)} - {str(row_id) for row_id, _ in expected}
    for row_id, vector in stored.items():
        assert np.isfinite(vector).all() and vector.any()
        if row_id != "12":
            np.testing.assert_allclose(vector, ENCODER.encode([texts[int(row_id) - 1]])[0], atol=1e-3)


def echo(status: int) -> Nonsense:
    """A service that quotes the request's headers, and the key alone, in its answer."""

    def nonsense(texts: list[str], encoding_format: str, authorization: str) -> Reply:
        key = authorization.removeprefix("Bearer ")
        message = f"bad request for key {key}, headers: {{'Authorization': '{authorization}'}}"
        if status == 200:
            return 200, "text/html", f"<html><pre>{message}</pre></html>".encode()
        return json_reply({"error": {"message": message, "type": "invalid_request_error"}}, status)

    return nonsense


def rejecting(texts: list[str], encoding_format: str, authorization: str) -> Reply | None:
    """400, quoting the key, for a request holding a text marked "reject"; others well."""
    if any("reject" in text for text in texts):
        return echo(400)(texts, encoding_format, authorization)
    return None


def test_the_key_a_service_echoes_is_never_shown_or_stored(dsn, conn, tables, service):
    texts = [*TEXTS[:6], "please reject me", *TEXTS[6:10]]
    environment = {"EMBEDLIB_API_KEY": KEY}

    def ingest(table: str) -> Any:
        arguments = ["--batch-size", str(BATCH), "--workers", "1", "--quiet"]
        result = run_cli("ingest", table, "--model", service.url, *arguments, dsn=dsn, env=environment)
        for place in (result.stdout, result.stderr, every_cell(conn, f"{table}_embeddings")):
            assert KEY not in place and KEY[3:20] not in place
        if result.returncode == 0:
            assert KEY not in every_cell(conn, f"{table}_embedding_errors")
        return result

    # 400 for one text's request: its row is recorded (the service's words, masked), the rest stored.
    service.after(0, rejecting)
    table = tables.source(texts)
    result = ingest(table)
    assert result.returncode == 0, result.stderr
    [(row_id, error)] = error_rows(conn, table)
    assert row_id == 7 and "HTTP 400 bad request for key ***, headers: {'Authorization': 'Bearer ***'}" in error
    assert "1 rows failed to embed" in result.stderr
    assert len(stored_rows_are_right(tables, table, texts)) == len(texts) - 1

    # 500 once mid-run: retried, with a warning that quotes the service, masked.
    service.after(2, service.once(echo(500)))
    table = tables.source(texts[:6])
    result = ingest(table)
    assert result.returncode == 0, result.stderr
    assert (
        "embedlib: warning: embeddings service" in result.stderr and "HTTP 500 bad request for key ***" in result.stderr
    )

    # 401 and 200 with a page: one line, exit 2, at first contact or mid-run.
    for good, status in ((0, 401), (2, 401), (0, 200), (2, 200)):
        service.after(good, echo(status))
        table = tables.source(texts)
        result = ingest(table)
        assert_clean_failure(result, "the embeddings service", "bad request for key ***")
        assert KEY not in every_cell(conn, f"{table}_embedding_errors")
        if good:  # mid-run: the target was made, and holds only right vectors
            stored_rows_are_right(tables, table, texts)


def test_a_key_given_in_python_is_masked_in_errors_warnings_and_the_errors_table(
    dsn, conn, tables, service, caplog, monkeypatch
):
    monkeypatch.delenv("EMBEDLIB_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    key = "given-in-python-4fK8sW1zNq"
    texts = [*TEXTS[:6], "please reject me", *TEXTS[6:10]]
    table = tables.source(texts)
    encoder = RemoteEncoder(service.after(1, rejecting).url, api_key=key, retry_s=5)
    with caplog.at_level(logging.WARNING):
        report = Ingestor(dsn, table=table, model=encoder, batch_size=BATCH, workers=1).run()
    assert (report.rows, report.failed) == (len(texts) - 1, 1)
    assert key not in every_cell(conn, f"{table}_embedding_errors") and "for key ***" in error_rows(conn, table)[0][1]

    service.after(0, service.once(echo(503)))
    encoder.encode(["once more"])  # 503 once, retried: the warning quotes the service
    assert "HTTP 503 bad request for key ***" in caplog.text
    service.after(0, echo(401))
    with pytest.raises(EncoderUnavailable, match=r"HTTP 401 bad request for key \*\*\*") as refused:
        encoder.encode(["again"])
    assert key not in str(refused.value)
    assert key not in caplog.text


def test_the_errors_table_gets_no_key_and_no_zero_vector_from_any_encoder(monkeypatch):
    monkeypatch.setenv("EMBEDLIB_API_KEY", KEY)
    said = describe(RuntimeError(f"echo: {{'Authorization': 'Bearer {KEY}'}}, key {KEY}\nsecond line"))
    assert said == "RuntimeError: echo: {'Authorization': 'Bearer ***'}, key ***"
    assert KEY[:8] not in describe(RuntimeError("x" * 990 + KEY))  # masked before it is cut: no half key
    vectors = np.array([[0, 0], [1, 0], [np.nan, 0], [1e-9, 0], [-0.0, 0], [7e4, 0]], dtype=np.float32)
    assert unstorable_rows(vectors, "vector") == {0: ZERO_VECTOR, 2: NON_FINITE, 4: ZERO_VECTOR}
    assert unstorable_rows(vectors, "halfvec") == {
        0: ZERO_VECTOR,
        2: NON_FINITE,
        3: ZERO_VECTOR,  # 1e-9 is 0 in float16: stored, it would be the zero vector
        4: ZERO_VECTOR,
        5: "the vector has values beyond halfvec's range (+-65504): store it with --dtype float",
    }


def test_a_vector_too_small_to_have_a_direction_is_not_stored():
    tiny = np.full((1, 8), 1e-45, dtype=np.float32)  # not zero, but its squares are: norm 0, distances NaN
    small = np.full((1, 8), 1e-15, dtype=np.float32)  # squares 1e-30: a direction float32 can still tell
    assert unstorable_rows(np.vstack([tiny, small]), "vector") == {0: ZERO_VECTOR}
