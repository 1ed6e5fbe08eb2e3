"""Connections, DSN handling and password redaction.

Every connection embedlib opens goes through ``connect``, so every
connection error is turned into a one-line ``DatabaseError`` with the
password removed.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from embedlib.errors import DatabaseError

Connection = psycopg2.extensions.connection

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?=@)", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the one given, else the embedded server's."""
    if dsn:
        return dsn
    from embedlib.embedded import embedded_dsn

    return embedded_dsn()


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with any password (in URL or keyword form, or the DSN's own) replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _KEYWORD_PASSWORD.sub(r"\g<head>***", text)
    password = _password_of(dsn) if dsn else None
    if password:
        text = text.replace(password, "***")
    return text


def _password_of(dsn: str) -> str | None:
    try:
        return psycopg2.extensions.parse_dsn(dsn).get("password") or None
    except psycopg2.ProgrammingError:
        return None


def connect(dsn: str, *, autocommit: bool = False) -> Connection:
    """Open a connection, or raise a DatabaseError whose message names no password."""
    try:
        conn = psycopg2.connect(dsn, application_name="embedlib", connect_timeout=10)
    except psycopg2.ProgrammingError as exc:  # malformed DSN
        raise DatabaseError(f"invalid database dsn: {redact(one_line(exc), dsn)}") from None
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot connect to the database: {redact(one_line(exc), dsn)}") from None
    conn.autocommit = autocommit
    return conn


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (psycopg2 adds DETAIL/HINT lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def qualified(schema: str, name: str) -> sql.Composed:
    """``"schema"."name"``, each part quoted as an identifier."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def ensure_vector_extension(conn: Connection) -> None:
    """Create pgvector's extension if missing, or say exactly what to do."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if cur.fetchone() is not None:
            return
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        available = cur.fetchone() is not None
    if not available:
        raise DatabaseError(
            "the pgvector extension is not installed on this postgresql server: install it "
            "(e.g. the postgresql-NN-pgvector package) or run without --dsn to use the embedded server"
        )
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.commit()
    except psycopg2.errors.InsufficientPrivilege:
        conn.rollback()
        raise DatabaseError(
            "the pgvector extension is not enabled in this database and this user may not "
            "create it: ask an administrator to run CREATE EXTENSION vector"
        ) from None


def fetch_all(conn: Connection, query: sql.Composable | str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()
