"""A TCP proxy in front of PostgreSQL, for faults and distance on purpose.

``Proxy(dsn)`` listens on a local port and forwards every connection to
the server ``dsn`` names (TCP or Unix socket); ``proxy.dsn`` is the same DSN
pointed at the proxy. ``drop_connections()`` cuts every connection through
it, as a network fault or a server restart would; ``stop()`` also stops
listening, so reconnecting fails until ``start()``. The fault tests use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import psycopg2.extensions

_CHUNK = 1 << 16


class Proxy:
    def __init__(self, dsn: str) -> None:
        params = psycopg2.extensions.parse_dsn(dsn)
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
        params = {**self._params, "host": "127.0.0.1", "port": str(self.port)}
        return psycopg2.extensions.make_dsn(**params)

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
            with self._lock:
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), name="embedlib-proxy-pump", daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
