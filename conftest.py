"""Fixtures shared by tests/ and benchmarks/: a real PostgreSQL with pgvector, fresh tables per test.

The server is the one in ``EMBEDLIB_TEST_DSN`` when set, else an embedded
server in a temporary EMBEDLIB_HOME (started once per session).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import psycopg2
import pytest
from psycopg2 import sql

from embedlib.db.server import ensure_vector_extension
from embedlib.db.session import connect
from embedlib.run.executors import EXECUTORS
from embedlib.store.schema import SIDE_TABLES


@pytest.fixture(scope="session")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("EMBEDLIB_TEST_DSN")
    if not url:
        os.environ["EMBEDLIB_HOME"] = str(tmp_path_factory.mktemp("embedlib-home"))
        from embedlib.db.embedded import embedded_dsn

        url = embedded_dsn()
    setup = connect(url)
    ensure_vector_extension(setup)
    setup.close()
    return url


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    connection = connect(dsn, autocommit=True)
    yield connection
    connection.close()


class Tables:
    """Makes source tables with unique names and drops them (and their targets) afterwards."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self.conn = conn
        self.created: list[str] = []

    def name(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.created += [name, f"{name}_embeddings"]
        self.created += [f"{name}_embedding_{kind}" for kind in (*SIDE_TABLES, "queue")]
        return name

    def source(self, texts: Sequence[str | None], *, prefix: str = "t", id_type: str = "bigint") -> str:
        """A table (id <id_type> primary key, text text) holding ``texts`` with ids 1..n."""
        name = self.name(prefix)
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, text text)").format(sql.Identifier(name), sql.SQL(id_type))
            )
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(name)),
                [(str(i), t) for i, t in enumerate(texts, start=1)],
            )
        return name

    def embeddings(self, table: str) -> dict[str, np.ndarray]:
        """id (as text) -> stored vector."""
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id::text, embedding::text FROM {}").format(sql.Identifier(f"{table}_embeddings"))
            )
            return {row_id: np.array(vec.strip("[]").split(","), dtype=np.float32) for row_id, vec in cur.fetchall()}

    def rows(self, table: str, columns: str = "*") -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY id").format(sql.SQL(columns), sql.Identifier(f"{table}_embeddings"))
            )
            return cur.fetchall()

    def drop_all(self) -> None:
        with self.conn.cursor() as cur:
            for name in self.created:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                if name.endswith("_embeddings"):  # change capture's function, if it was tracked
                    function = sql.Identifier(name.removesuffix("s") + "_track")
                    cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))


@pytest.fixture
def tables(conn: psycopg2.extensions.connection) -> Iterator[Tables]:
    made = Tables(conn)
    yield made
    made.drop_all()


@pytest.fixture(params=sorted(EXECUTORS))
def executor_name(request: pytest.FixtureRequest) -> str:
    """Each executor in turn: a behaviour suite runs against all of them (ray where Ray is installed;
    ``make setup`` installs it, so CI runs it)."""
    if request.param == "ray":
        pytest.importorskip("ray", reason="the ray executor needs the optional extra embedlib[ray]")
    return str(request.param)


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """Real sentences shipped with embedlib."""
    from embedlib.source.loader import sample_lines

    return sample_lines()


@pytest.fixture(scope="session")
def st_model():  # type: ignore[no-untyped-def]
    """The raw sentence-transformers model, to compare embedlib's vectors against."""
    from embedlib.encode.base import resolve_encoder

    return resolve_encoder("all-MiniLM-L6-v2")._model  # type: ignore[attr-defined]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full-size", action="store_true", help="embedlib benchmarks: run the scaling sweep at 10x the rows"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks run only under ``--benchmark-only``: plain ``pytest`` is the test suite."""
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with pytest --benchmark-only")
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(skip)
