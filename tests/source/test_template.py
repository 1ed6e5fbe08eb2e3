"""Several columns as one text (--text-template): embedded, searched, tracked and checked as one."""

from __future__ import annotations

import hashlib

import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.errors import ConfigError, SchemaError
from embedlib.testing import HashEncoder
from tests.processes import assert_clean_failure, run_cli

TEMPLATE = "{title}\n\n{body}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def articles(conn, tables):  # type: ignore[no-untyped-def]
    table = tables.name("articles")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, body text, views int)").format(
                sql.Identifier(table)
            )
        )
        cur.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'Cats', 'Cats sleep a lot.', 5), (2, 'Dogs', NULL, 7)").format(
                sql.Identifier(table)
            )
        )
    return table


def stored_hashes(tables, table: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return dict(tables.rows(table, "id, text_hash"))


def update(conn, table: str, assignment: str) -> None:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET " + assignment + " WHERE id = 1").format(sql.Identifier(table)))


def test_a_template_builds_the_text_from_several_columns_null_as_empty(dsn, conn, tables, articles):
    ingestor = Ingestor(dsn, table=articles, text_template=TEMPLATE, model=HashEncoder())
    assert ingestor.run().rows == 2
    assert stored_hashes(tables, articles) == {1: md5("Cats\n\nCats sleep a lot."), 2: md5("Dogs\n\n")}
    [match, *_] = ingestor.search("Cats\n\nCats sleep a lot.", k=2)
    assert (match.id, match.text) == (1, "Cats\n\nCats sleep a lot.")
    update(conn, articles, "views = views + 1")  # not in the template: nothing to do
    assert ingestor.run().rows == 0
    update(conn, articles, "title = 'Cats!'")
    assert ingestor.run().rows == 1


def test_a_tracked_table_queues_changes_to_the_templates_columns_only(dsn, conn, tables, articles):
    ingestor = Ingestor(dsn, table=articles, text_template=TEMPLATE, model=HashEncoder())
    ingestor.track()
    ingestor.run()
    update(conn, articles, "views = views + 1")
    update(conn, articles, "body = 'Cats sleep all day.'")
    report = ingestor.run()
    assert (report.tracked, report.rows) == (True, 1)
    assert stored_hashes(tables, articles)[1] == md5("Cats\n\nCats sleep all day.")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{articles}_embedding_queue")))
        assert cur.fetchone()[0] == 0


def test_the_command_reads_backslash_n_as_a_newline_and_a_target_keeps_its_template(dsn, tables, articles):
    result = run_cli("ingest", articles, "--text-template", r"{title}\n\n{body}", "--quiet", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert stored_hashes(tables, articles)[2] == md5("Dogs\n\n")
    other = Ingestor(dsn, table=articles, text_template="{body}", model=HashEncoder())
    with pytest.raises(SchemaError, match="choose another --target"):
        other.run()


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("{title", "expected '}'"),
        ("no columns here", "names no column"),
        ("{}", "write each column as {name}"),
        ("{title:>10}", "write each column as {name}"),
        ("100% {title}", "holds a '%'"),
    ],
)
def test_a_bad_template_is_refused(dsn, articles, template, complaint):
    with pytest.raises(ConfigError, match=f"text template {template!r}") as refused:
        Ingestor(dsn, table=articles, text_template=template, model=HashEncoder()).run()
    assert complaint in str(refused.value) and refused.value.option == "text_template"


def test_a_bad_template_is_one_line_on_the_command_line(dsn, articles):
    assert_clean_failure(run_cli("status", articles, "--text-template", "{title:>10}", dsn=dsn), "no format")
    assert_clean_failure(
        run_cli("status", articles, "--text-template", "{title} {summary}", dsn=dsn), "has no column 'summary'"
    )
