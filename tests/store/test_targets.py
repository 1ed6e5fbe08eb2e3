"""A target belongs to its source, lives where it is named, and odd table shapes get a right answer
or one precise line before anything is written."""

from __future__ import annotations

import uuid

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.errors import SchemaError
from embedlib.store.schema import SIDE_TABLES
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli

ENCODER = HashEncoder()


@pytest.fixture
def schemas(conn):
    """Makes schemas with unique names and drops them, with all they hold, afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"s_{uuid.uuid4().hex[:8]}"
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    with conn.cursor() as cur:
        for name in made:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def execute(conn, statement: str, *identifiers: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(*(sql.Identifier(*i.split(".")) for i in identifiers)), params)
        return cur.fetchall() if cur.description else []


def make_source(conn, name: str, texts: list[str], *, text_type: str = "text") -> None:
    execute(conn, f"CREATE TABLE {{}} (id bigint PRIMARY KEY, text {text_type})", name)
    for i, text in enumerate(texts, start=1):
        execute(conn, "INSERT INTO {} VALUES (%s, %s)", name, params=(i, text))


def exists(conn, qualified: str) -> bool:
    return bool(execute(conn, "SELECT to_regclass(%s) IS NOT NULL", params=(qualified,))[0][0])


def ingest(dsn: str, table: str, **options) -> object:
    return Ingestor(dsn, table=table, model=ENCODER, executor="serial", **options).run()


def test_a_bare_target_lives_in_the_sources_schema_not_on_the_search_path(dsn, conn, tables, schemas):
    s2 = schemas()
    public_target = tables.name("docs")
    make_source(conn, public_target, ["decoy"])  # a table of that name on the search path (public)
    make_source(conn, f"{s2}.docs", ["first text", "second text"])
    report = ingest(dsn, f"{s2}.docs", target=public_target)
    assert report.target == f"{s2}.{public_target}" and report.rows == 2
    assert execute(conn, "SELECT count(*) FROM {}", f"{s2}.{public_target}")[0][0] == 2
    assert execute(conn, "SELECT text FROM {}", public_target) == [("decoy",)]  # untouched


def test_a_schema_qualified_target_and_load_create_tables_in_that_schema(dsn, conn, tables, schemas, tmp_path):
    other, s2 = schemas(), schemas()
    table = tables.source(["alpha", "beta"])
    report = ingest(dsn, table, target=f"{other}.vecs")
    assert report.target == f"{other}.vecs" and exists(conn, f'"{other}"."vecs"')
    assert not exists(conn, f'"{other}.vecs"')  # not a table literally named "other.vecs"
    assert exists(conn, f'"{other}"."vecs_errors"')  # the side tables live beside it
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n")
    result = run_cli("load", f"{s2}.newt", str(lines), dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert execute(conn, "SELECT count(*) FROM {}", f"{s2}.newt")[0][0] == 2
    assert not exists(conn, f'"{s2}.newt"')
    result = run_cli("ingest", table, "--target", "no_such_schema.vecs", dsn=dsn)
    assert_clean_failure(result, "schema 'no_such_schema'", "does not exist")


def test_another_sources_target_is_refused_with_nothing_written(dsn, conn, tables):
    t1, t3 = tables.source(["one", "two", "three"]), tables.source(["other", "texts", "here"])
    target = f"{t1}_embeddings"
    ingest(dsn, t1)
    before = execute(conn, "SELECT id, text_hash, embedding::text FROM {} ORDER BY id", target)
    with pytest.raises(SchemaError, match=f"holds the vectors of public.{t1}"):
        ingest(dsn, t3, target=target)
    result = run_cli("ingest", t3, "--target", target, dsn=dsn)
    assert_clean_failure(result, f"holds the vectors of public.{t1}", "choose another --target")
    # The same source read through another text column is another source for the target too.
    execute(conn, "ALTER TABLE {} ADD COLUMN title text DEFAULT 'a title'", t1)
    with pytest.raises(SchemaError, match="text 'text'"):
        ingest(dsn, t1, text_column="title")
    assert execute(conn, "SELECT id, text_hash, embedding::text FROM {} ORDER BY id", target) == before


def test_a_target_restored_without_its_primary_key_is_refused_before_any_write(dsn, conn, tables):
    table = tables.source(["one", "two"])
    ingest(dsn, table)
    target = f"{table}_embeddings"
    constraint = execute(
        conn, "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", params=(target,)
    )[0][0]
    execute(conn, "ALTER TABLE {} DROP CONSTRAINT {}", target, constraint)
    execute(conn, "UPDATE {} SET text = 'changed' WHERE id = 1", table)
    with pytest.raises(SchemaError, match="no primary key on id"):
        ingest(dsn, table)
    assert execute(conn, "SELECT count(*) FROM {}", target)[0][0] == 2


def test_the_same_column_as_id_and_text_is_embedded(dsn, conn, tables):
    name = tables.name("tags")
    execute(conn, "CREATE TABLE {} (tag text PRIMARY KEY)", name)
    execute(conn, "INSERT INTO {} VALUES ('red'), ('green'), ('blue')", name)
    report = ingest(dsn, name, id_column="tag", text_column="tag")
    assert report.rows == 3
    assert {row[0] for row in execute(conn, "SELECT id FROM {}", f"{name}_embeddings")} == {"red", "green", "blue"}
    assert ingest(dsn, name, id_column="tag", text_column="tag").rows == 0


def test_char_n_text_is_measured_without_its_padding(dsn, conn, tables):
    name = tables.name("padded")
    make_source(conn, name, ["hello world"], text_type="char(40)")
    ingest(dsn, name)
    assert execute(conn, "SELECT char_length, text_hash = md5('hello world') FROM {}", f"{name}_embeddings") == [
        (11, True)
    ]


@pytest.mark.parametrize(
    ("shape", "expected", "not_expected"),
    [
        ("inheritance", "inheritance children", None),
        ("view", "is a view", "ADD PRIMARY KEY"),
        ("composite", "unique only together with others (id, part)", "ADD PRIMARY KEY (id)"),
        ("partial", "partial or expression index", "together with others"),
    ],
)
def test_shapes_embedlib_cannot_key_get_one_precise_line(dsn, conn, tables, shape, expected, not_expected):
    name = tables.name(shape)
    if shape == "inheritance":
        make_source(conn, name, ["parent row"])
        child = tables.name("child")
        execute(conn, "CREATE TABLE {} () INHERITS ({})", child, name)
        execute(conn, "INSERT INTO {} VALUES (1, 'child row with the same id')", child)
    elif shape == "view":
        base = tables.source(["a view's text"])
        execute(conn, "CREATE VIEW {} AS SELECT * FROM {}", name, base)
    elif shape == "partial":
        execute(conn, "CREATE TABLE {} (id bigint, text text)", name)
        execute(conn, "CREATE UNIQUE INDEX ON {} (id) WHERE id > 0", name)
    else:
        execute(conn, "CREATE TABLE {} (id bigint, part int, text text, PRIMARY KEY (id, part))", name)
    result = run_cli("ingest", name, dsn=dsn)
    assert_clean_failure(result, expected)
    if not_expected:
        assert not_expected not in result.stderr
    if shape == "view":
        execute(conn, "DROP VIEW {}", name)
    if shape == "inheritance":
        execute(conn, "DROP TABLE {}", child)
    for suffix in ("embeddings", *(f"embedding_{kind}" for kind in SIDE_TABLES)):
        assert not exists(conn, f'"{name}_{suffix}"')


def test_a_renamed_source_keeps_its_target_and_a_lost_record_is_not_a_way_in(dsn, conn, tables):
    table, other = tables.source(["one", "two", "three"]), tables.source(["un", "deux", "trois"])
    target = f"{table}_embeddings"
    ingest(dsn, table)
    renamed = tables.name("renamed")
    execute(conn, "ALTER TABLE {} RENAME TO {}", table, renamed)
    execute(conn, "UPDATE {} SET text = 'two, edited' WHERE id = 2", renamed)
    assert ingest(dsn, renamed, target=target).rows == 1  # the same table under its new name
    execute(conn, "DROP TABLE {}", f"{table}_embedding_meta")  # the record is lost (or predates records)
    with pytest.raises(SchemaError, match="has no record of the source it serves"):
        ingest(dsn, other, target=target)
    before = execute(conn, "SELECT id, text_hash FROM {} ORDER BY id", target)
    assert ingest(dsn, renamed, target=target).rows == 0  # its own rows: taken back, and recorded again
    assert execute(conn, "SELECT id, text_hash FROM {} ORDER BY id", target) == before
    with pytest.raises(SchemaError, match=f"holds the vectors of public.{renamed}"):
        ingest(dsn, other, target=target)
