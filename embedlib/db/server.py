"""What embedlib needs of the server before a run: pgvector, and room for its connections."""

from __future__ import annotations

import psycopg2

from embedlib.db.session import Connection, fetch_all
from embedlib.errors import DatabaseError


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


def check_connection_room(conn: Connection, needed: int) -> None:
    """Refuse a run that needs more connections than the server has free, before it starts.

    Beyond ``max_connections`` the server refuses new connections; a worker
    would then wait out its reconnect time and fail, long after the start.
    """
    (limit, reserved, superuser, used) = fetch_all(
        conn,
        """
        SELECT current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int,
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
        """,
    )[0]
    free = limit - used - (0 if superuser else reserved)
    if needed > free:
        raise DatabaseError(
            f"this run needs {needed} more database connections (one per worker) but the server has "
            f"{max(free, 0)} free (max_connections {limit}, {used} in use); use fewer --workers"
        )
