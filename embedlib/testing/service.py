"""A local OpenAI-compatible embeddings service with a set latency, for benchmarks and tests.

``EmbeddingService(latency_ms=50)`` serves ``POST /v1/embeddings`` on a free
local port (``service.url``) the way TEI, Ollama or a hosted API look to a
client: each request waits ``latency_ms``, then gets its vectors. The
vectors come from a fast encoder (``testing.HashEncoder`` by default), so
the time measured is the waiting, not the computing. Requests are served
concurrently, each on its own thread, like a service with room to spare;
``capacity`` limits how many are served at once (the rest queue).

``fail_next(n, status)`` answers the next ``n`` requests with ``status``,
and a request holding a text in ``rejected`` gets 400: the retry and
failure tests use them.

Benchmarks run it in a process of its own (``in_subprocess``, or
``python -m embedlib.testing.service --latency-ms 50``), as a real service would be:
in the client's process its JSON work would compete for the client's GIL.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from embedlib.encode.base import Encoder
from embedlib.testing.encoders import HashEncoder


class EmbeddingService:
    def __init__(
        self,
        latency_ms: float = 0.0,
        *,
        encoder: Encoder | None = None,
        capacity: int | None = None,
        formats: tuple[str, ...] = ("float", "base64"),
    ) -> None:
        self.latency_s = latency_ms / 1000
        self.formats = formats  # encoding_format values served; others get 400, as from a stricter service
        self.authorizations: set[str | None] = set()  # Authorization headers seen
        self.rejected: set[str] = set()  # texts answered with 400, as a service does a text too long
        self.encoder = encoder or HashEncoder(384)
        self.requests = 0  # answered with vectors
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once
        self.seen_models: set[str | None] = set()
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedlib-service", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures += [status] * count

    def heal(self) -> None:
        """Forget the failures still to come."""
        with self._lock:
            self._failures.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EmbeddingService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def answer(self, body: dict[str, Any], authorization: str | None = None) -> tuple[int, dict[str, Any]]:
        """The status and JSON reply to one request's body."""
        with self._lock:
            self.authorizations.add(authorization)
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            return failure, {"error": {"message": "failing on purpose (EmbeddingService.fail_next)"}}
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return 400, {"error": {"message": "input must be a string or a list of strings"}}
        if self.rejected.intersection(texts):
            return 400, {"error": {"message": "an input is longer than this model's context"}}
        if self._slots:
            self._slots.acquire()
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency_s)
            vectors = self.encoder.encode(texts)
        finally:
            with self._lock:
                self.in_flight -= 1
            if self._slots:
                self._slots.release()
        with self._lock:
            self.requests += 1
            self.seen_models.add(body.get("model"))
        if body.get("encoding_format", "float") not in self.formats:
            return 400, {"error": {"message": f"encoding_format must be one of {', '.join(self.formats)}"}}
        if body.get("encoding_format") == "base64":
            as_sent = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        else:
            as_sent = [v.tolist() for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(as_sent)]
        return 200, {"object": "list", "data": data, "model": body.get("model") or self.encoder.name}


def _handler_for(service: EmbeddingService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/embeddings":
                self._reply(404, {"error": {"message": f"no such endpoint {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                self._reply(400, {"error": {"message": "the body is not JSON"}})
                return
            self._reply(*service.answer(body if isinstance(body, dict) else {}, self.headers.get("Authorization")))

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: benchmarks send thousands of requests

    return Handler


@contextlib.contextmanager
def in_subprocess(latency_ms: float, *, capacity: int | None = None) -> Iterator[str]:
    """An EmbeddingService in a process of its own while the block runs; yields its URL."""
    command = [sys.executable, "-m", "embedlib.testing.service", "--latency-ms", str(latency_ms)]
    if capacity:
        command += ["--capacity", str(capacity)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the embeddings service did not start (exit status {process.wait()})")
        yield url
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible embeddings service with a set latency.")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="wait per request (default: %(default)s)")
    parser.add_argument("--capacity", type=int, help="requests served at once (default: no limit)")
    parser.add_argument("--dimension", type=int, default=384)
    args = parser.parse_args()
    service = EmbeddingService(args.latency_ms, encoder=HashEncoder(args.dimension), capacity=args.capacity)
    print(service.url, flush=True)  # the first line is the URL: in_subprocess reads it
    with contextlib.suppress(KeyboardInterrupt):
        service._thread.join()


if __name__ == "__main__":
    main()
