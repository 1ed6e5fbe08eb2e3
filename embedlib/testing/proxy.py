"""A TCP proxy in front of PostgreSQL, for faults and distance on purpose.

``Proxy(dsn)`` listens on a local port and forwards every connection to
the server ``dsn`` names (TCP or Unix socket); ``proxy.dsn`` is the same DSN
pointed at the proxy. ``drop_connections()`` cuts every connection through
it, as a network fault or a server restart would; ``stop()`` also stops
listening, so reconnecting fails until ``start()``. The fault tests use it.

``latency_ms`` adds that much to every round trip (half each way), as a
database in another availability zone would: each chunk of bytes is held
until its time comes, in order, without limiting bandwidth. The
database-latency benchmarks (``embedlib bench --db-latency-ms``) run it in a
process of their own (``in_subprocess``): in the client's process its
threads would compete with the client's for the GIL, which a real network
does not.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2.extensions

from embedlib.db.session import connect
from embedlib.errors import DatabaseError
from embedlib.redaction import normalize_dsn, redact

_CHUNK = 1 << 16


class Proxy:
    def __init__(self, dsn: str, *, latency_ms: float = 0.0) -> None:
        if not latency_ms >= 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")
        self.one_way_s = latency_ms / 2000
        params = psycopg2.extensions.parse_dsn(normalize_dsn(dsn))
        host = params.get("host") or "/tmp"
        port = int(params.get("port") or 5432)
        self._upstream: str | tuple[str, int]
        if host.startswith("/"):
            self._upstream = str(Path(host) / f".s.PGSQL.{port}")
        else:
            self._upstream = (host, port)
        self._params = params
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.start()

    @property
    def dsn(self) -> str:
        """``dsn``, but through the proxy."""
        return _through(self._params, self.port)

    def start(self) -> None:
        """Listen (on the same port as before, once started)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="embedlib-proxy", daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every connection: the server is gone, as far as clients can tell."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def drop_connections(self) -> int:
        """Cut every connection through the proxy; returns how many client connections there were."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                if isinstance(self._upstream, str):
                    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                else:
                    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.connect(self._upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):  # as libpq does: no waiting to fill a segment (Nagle)
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                if self.one_way_s:
                    _start_delayed_pump(source, sink, self.one_way_s)
                else:
                    _start(_pump, source, sink)


def _start(target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, name="embedlib-proxy-pump", daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source, sink)


def _start_delayed_pump(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
    """Copy bytes one way, each chunk ``delay_s`` after it arrived: one thread receives, one sends."""
    in_transit: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def receive() -> None:
        try:
            while data := source.recv(_CHUNK):
                in_transit.put((time.monotonic() + delay_s, data))
        except OSError:
            pass
        in_transit.put((time.monotonic() + delay_s, b""))  # end of stream, delivered in turn

    def send() -> None:
        try:
            while True:
                due, data = in_transit.get()
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, sink)

    _start(receive)
    _start(send)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _through(params: dict[str, str], port: int) -> str:
    return psycopg2.extensions.make_dsn(**{**params, "host": "127.0.0.1", "port": str(port)})


_UPSTREAM_VARIABLE = "EMBEDLIB_PROXY_UPSTREAM"  # the DSN goes by environment, not argv: ps shows argv


@contextlib.contextmanager
def in_subprocess(dsn: str, latency_ms: float) -> Iterator[str]:
    """A Proxy with ``latency_ms`` in a process of its own while the block runs; yields the DSN through it."""
    connect(dsn).close()  # a DSN that cannot work fails here, in one redacted line, not in the child
    dsn = normalize_dsn(dsn)
    command = [sys.executable, "-m", "embedlib.testing.proxy", "--latency-ms", str(latency_ms)]
    environment = {**os.environ, _UPSTREAM_VARIABLE: dsn}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            process.wait()
            complaint = (process.stderr.read().strip().splitlines() or ["no reason given"])[-1]
            raise DatabaseError(f"the latency proxy did not start: {redact(complaint)}")
        yield _through(psycopg2.extensions.parse_dsn(dsn), int(port))
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    """``EMBEDLIB_PROXY_UPSTREAM=DSN python -m embedlib.testing.proxy --latency-ms 5``: prints the port,
    serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    args = parser.parse_args()
    # A pump thread woken by its socket takes the interpreter at once, as a network would pass
    # the bytes on: at the default 5 ms it can wait that long behind another pump.
    sys.setswitchinterval(0.0005)
    proxy = Proxy(os.environ[_UPSTREAM_VARIABLE], latency_ms=args.latency_ms)
    print(proxy.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
