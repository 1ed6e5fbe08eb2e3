"""Connections, DSN handling and password redaction.

Every connection embedlib opens goes through ``connect``, so every
connection error is turned into a one-line ``DatabaseError`` with the
password removed. Long-lived connections are ``Session``s: when the server
drops one (a restart, ``pg_terminate_backend``, a network blip), the unit of
work under way is run again on a new connection, with backoff.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from embedlib.backoff import Backoff
from embedlib.db.trips import CountingConnection, round_trips
from embedlib.errors import DatabaseError, one_line
from embedlib.options import default
from embedlib.redaction import get_logger, normalize_dsn, remember_dsn
from embedlib.redaction import redact as redaction_redact

log = get_logger(__name__)

Connection = psycopg2.extensions.connection
T = TypeVar("T")

DEFAULT_RECONNECT_S = default("reconnect_s")  # how long a Session keeps trying to get its connection back
# Times one unit of work may lose its connection, or be rolled back by a deadlock,
# before the fault counts as persistent (a statement that crashes the server's backend, say).
MAX_RETRIES_OF_A_UNIT = 10


def _without_quoted_words(complaint: str) -> str:
    """libpq's complaint about a malformed DSN, cut where it starts quoting the DSN ('missing "=" after
    "..."'): the quoted word may be a piece of a password, and may hold a quote itself."""
    kept = re.sub(r'"(.)"', "\x00\\1\x00", complaint)  # a one-character quote ("=") says what is missing
    head, quote, _ = kept.partition('"')
    return (head + ('"..."' if quote else "")).replace("\x00", '"')


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the one given, else the embedded server's."""
    if dsn:
        return dsn
    from embedlib.db.embedded import embedded_dsn

    return embedded_dsn()


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` through the one redactor (``redaction.redact``), which learns ``dsn``'s password first."""
    remember_dsn(dsn)
    return redaction_redact(text)


# What libpq says of a server that is not there yet, or is full or restarting: the same call may work
# later. Anything else (a wrong password, database or role, no pg_hba.conf entry) needs a fix first.
_PASSING = (
    "connection refused",
    "timeout expired",
    "could not connect",
    "is starting up",
    "is shutting down",
    "too many clients",
    "server closed the connection",
    "no route to host",
)


def connect(dsn: str, *, autocommit: bool = False) -> Connection:
    """Open a connection, or raise a DatabaseError whose message names no password.

    A URL whose password holds characters libpq would cut it at (``@``,
    ``/``, a stray ``%``) is percent-encoded first (``redaction.normalize_dsn``).
    """
    remember_dsn(dsn)
    try:
        conn = psycopg2.connect(
            normalize_dsn(dsn), application_name="embedlib", connect_timeout=10, connection_factory=CountingConnection
        )
    except psycopg2.ProgrammingError as exc:  # malformed DSN: its fragments are not shown
        raise DatabaseError(f"invalid database dsn: {redact(_without_quoted_words(one_line(exc)))}") from None
    except psycopg2.Error as exc:
        transient = any(sign in str(exc).lower() for sign in _PASSING)
        raise DatabaseError(f"cannot connect to the database: {redact(one_line(exc))}", transient=transient) from None
    conn.autocommit = autocommit
    return conn


def qualified(schema: str, name: str) -> sql.Composed:
    """``"schema"."name"``, each part quoted as an identifier."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def fetch_all(conn: Connection, query: sql.Composable | str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def server_time(conn: Connection) -> Any:
    """The server's clock, now: what times stored by the server are compared with."""
    return fetch_all(conn, "SELECT now()")[0][0]


def connection_lost(exc: BaseException, conn: Connection | None) -> bool:
    """Whether ``exc`` means the connection is gone (so the work may be retried on a new one).

    SQLSTATE class 08 is a connection exception; 57P01-57P03 are the server
    shutting down, crashing or starting up. Not 57014, a cancelled query
    (a statement timeout): running it again would only time out again.
    """
    if not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return False
    code = getattr(exc, "pgcode", None) or ""
    return (conn is not None and conn.closed != 0) or code.startswith("08") or code in ("57P01", "57P02", "57P03")


class Session:
    """One logical connection that comes back when the server drops it.

    ``run(unit)`` calls ``unit(connection)``; if the connection is lost
    meanwhile, it reconnects (backing off from 0.1 s to 5 s between tries,
    for up to ``reconnect_s`` seconds) and calls ``unit`` again. So a unit
    must be safe to run twice: a read, or a whole transaction that commits at
    its end (a transaction cut short is rolled back by the server). A fault
    that outlasts ``reconnect_s`` ends in a ``DatabaseError``. ``on_connect``
    runs on every new connection (the first one too) to restore session
    state: temporary tables and advisory locks die with a connection.
    """

    def __init__(
        self,
        dsn: str,
        *,
        autocommit: bool = False,
        reconnect_s: float = DEFAULT_RECONNECT_S,
        on_connect: Callable[[Connection], None] | None = None,
        retry_first_connect: bool = False,
    ) -> None:
        self._dsn = dsn
        self._autocommit = autocommit
        self._reconnect_s = reconnect_s
        self._on_connect = on_connect
        self.reconnects = 0
        self._trips_before = 0  # round trips of the connections this session has closed
        self._conn: Connection | None = None
        if retry_first_connect:  # the run is under way: the server was there a moment ago
            self._reconnect(None)
        else:
            self._open()  # a run's first connection fails at once: a wrong DSN is not a fault to wait out

    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._reconnect(None)
        assert self._conn is not None
        return self._conn

    def run(self, unit: Callable[[Connection], T]) -> T:
        cause: BaseException | None = None
        apart = Backoff(0.025, 0.25, jitter=1.0)  # after a deadlock: apart from the session it met
        for _ in range(MAX_RETRIES_OF_A_UNIT):
            conn = self.conn
            try:
                return unit(conn)
            except psycopg2.extensions.TransactionRollbackError as exc:
                # A deadlock or serialization failure: the server rolled the unit back so that
                # another session could go on. Doing it again is the documented cure.
                log.info("%s; running the unit again", one_line(exc))
                rollback_quietly(conn)
                cause = exc
                apart.sleep()
                continue
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if not connection_lost(exc, conn):
                    raise
                cause = exc
            self._reconnect(cause)
        rolled_back = isinstance(cause, psycopg2.extensions.TransactionRollbackError)
        what = "met a deadlock or serialization failure" if rolled_back else "lost the database connection"
        raise DatabaseError(
            f"{what} {MAX_RETRIES_OF_A_UNIT} times in a row on the same work "
            f"(last: {redact(one_line(cause), self._dsn) if cause else 'none'})",
            transient=True,
        )

    @property
    def round_trips(self) -> int:
        """Round trips to the server on this session's connections so far (see ``trips``)."""
        return self._trips_before + round_trips(self._conn)

    def close(self) -> None:
        if self._conn is not None:
            self._trips_before += round_trips(self._conn)
            self._conn.close()
            self._conn = None

    def _open(self) -> None:
        conn = connect(self._dsn, autocommit=self._autocommit)
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _reconnect(self, cause: BaseException | None) -> None:
        self.close()
        reason = redact(one_line(cause), self._dsn) if cause else "connection closed"
        if cause is not None:
            log.warning("lost the database connection (%s); reconnecting", reason)
        backoff = Backoff(0.1, 5.0, total=self._reconnect_s)
        while True:
            try:
                self._open()
                break
            except (DatabaseError, psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if not backoff.sleep():
                    raise DatabaseError(
                        f"lost the database connection ({reason}) and could not reconnect "
                        f"within {self._reconnect_s:g} s: {redact(one_line(exc), self._dsn)}",
                        transient=not isinstance(exc, DatabaseError) or exc.transient,
                    ) from None
        if cause is not None:
            self.reconnects += 1
            log.warning("reconnected after %.1f s", backoff.elapsed)


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """One transaction on ``conn``, whatever its autocommit: committed at the end, rolled back on error."""
    autocommit = conn.autocommit
    if autocommit:
        conn.autocommit = False
    try:
        yield conn
        conn.commit()
    except BaseException:
        rollback_quietly(conn)
        raise
    finally:
        if autocommit and not conn.closed:
            conn.autocommit = True


@contextlib.contextmanager
def autocommitting(conn: Connection) -> Iterator[Connection]:
    """``conn`` outside transaction blocks while the block runs (each statement string commits on
    its own, with no BEGIN or COMMIT to wait for), then as it was."""
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.autocommit = autocommit


@contextlib.contextmanager
def one_statement(conn: Connection) -> Iterator[Connection]:
    """One transaction for the one ``execute`` made within, in as few round trips as can be: on
    an autocommit connection the statement string (several statements, ``;``-separated) is a
    transaction of its own, with no BEGIN or COMMIT to wait for (see ``trips``); otherwise
    ``transaction``."""
    if conn.autocommit:
        yield conn
        return
    with transaction(conn):
        yield conn


def rollback_quietly(conn: Connection) -> None:
    """Roll back if the connection is still there (a lost one has nothing to roll back)."""
    if not conn.closed:
        with contextlib.suppress(psycopg2.InterfaceError, psycopg2.OperationalError):
            conn.rollback()
