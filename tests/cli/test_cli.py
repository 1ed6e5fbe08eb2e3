"""The `embedlib` command as a user runs it: a real process, a real database.

Bad input must give one line on stderr, exit status 2, no traceback, and
leave nothing written.
"""

from __future__ import annotations

import json

import pytest
from psycopg2 import sql

from embedlib.db.relations import find_relation
from embedlib.store.schema import SIDE_TABLES
from tests.processes import assert_clean_failure, run_cli


def test_ingest_maps_the_original_command_and_prints_json(dsn, tables, sample_texts):
    table = tables.source(sample_texts[:40])
    result = run_cli("ingest", table, "10", "--workers", "4", "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["encoded"], report["executor"], report["workers"]) == (40, 40, "pipelined", 4)
    assert report["batch_size"] == 10
    for key in ("skipped", "failed", "seconds", "rows_per_s", "read_s", "encode_s", "write_s"):
        assert key in report
    assert len(tables.embeddings(table)) == 40


def test_progress_bar_and_env_workers(dsn, tables, sample_texts):
    table = tables.source(sample_texts[:20])
    result = run_cli("ingest", table, "--batch-size", "5", dsn=dsn, env={"EMBED_WORKERS": "2"})
    assert result.returncode == 0, result.stderr
    assert "row/s" in result.stderr  # tqdm's rate
    assert "embedded 20 rows" in result.stdout and "pipelined x2" in result.stdout


def test_load_then_ingest_metrics_only(dsn, tables, tmp_path):
    table = tables.name("loaded")
    text_file = tmp_path / "lines.txt"
    text_file.write_text("first line\n\nsecond line\r\nthird, with 'quotes' and \\backslash\\\n", encoding="utf-8")
    result = run_cli("load", table, str(text_file), dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "loaded 3 rows" in result.stdout
    result = run_cli("load", table, "-", dsn=dsn, stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    with tables.conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT text FROM {} ORDER BY id").format(sql.Identifier(table)))
        assert [r[0] for r in cur.fetchall()] == [
            "first line",
            "second line",
            "third, with 'quotes' and \\backslash\\",
            "from stdin",
        ]
    assert_clean_failure(run_cli("ingest", table, "--metrics-only", dsn=dsn), "does not exist yet")


def test_load_refuses_a_table_it_could_not_ingest(dsn, conn, tables, tmp_path):
    table = tables.name("noid")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (body text)").format(sql.Identifier(table)))
    text_file = tmp_path / "lines.txt"
    text_file.write_text("a line\n", encoding="utf-8")
    assert_clean_failure(run_cli("load", table, str(text_file), dsn=dsn), "no column 'id'")


def test_load_refuses_nul_and_keeps_table_unchanged(dsn, tables, tmp_path):
    table = tables.source(["kept"])
    text_file = tmp_path / "bad.txt"
    text_file.write_text("fine\nbad \x00 line\n", encoding="utf-8")
    assert_clean_failure(run_cli("load", table, str(text_file), dsn=dsn), "line 2", "NUL")
    with tables.conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT text FROM {}").format(sql.Identifier(table)))
        assert cur.fetchall() == [("kept",)]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["ingest", "no_such_table"], ["table 'no_such_table' does not exist"]),
        (["ingest", "{table}", "--text-column", "nope"], ["no column 'nope'"]),
        (["ingest", "{table}", "--text-column", "id"], ["is bigint, not a text type"]),
        (["ingest", "{table}", "--id-column", "text"], ["no unique index"]),
        (["ingest", "{table}", "--workers", "0"], ["--workers", ">= 1"]),
        (["ingest", "{table}", "--workers", "5000"], ["needs 5000 more database connections", "fewer --workers"]),
        (["ingest", "{table}", "--max-attempts", "0"], ["--max-attempts", ">= 1"]),
        (["ingest", "{table}", "--reconnect-timeout", "soon"], ["expected a number of seconds"]),
        (["ingest", "{table}", "abc"], ["expected a whole number"]),
        (["ingest", "{table}", "--executor", "bogus"], ["invalid choice: 'bogus'"]),
        (["ingest", "{table}", "10", "--batch-size", "20"], ["disagree"]),
        (["ingest", "{table}", "--target", "x" * 70], ["longer than"]),
        (["load", "{table}", "/no/such/file.txt"], ["cannot read"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_bad_input_fails_cleanly_and_writes_nothing(dsn, conn, tables, args, fragments):
    table = tables.source(["one", "two"])
    result = run_cli(*[a.format(table=table) for a in args], dsn=dsn)
    assert_clean_failure(result, *fragments)
    assert find_relation(conn, f"{table}_embeddings") is None


def test_bad_env_workers(dsn, conn, tables):
    table = tables.source(["one"])
    assert_clean_failure(run_cli("ingest", table, dsn=dsn, env={"EMBED_WORKERS": "many"}), "EMBED_WORKERS")
    assert find_relation(conn, f"{table}_embeddings") is None


@pytest.mark.model
def test_missing_model_fails_cleanly(dsn, conn, tables):
    table = tables.source(["one"])
    result = run_cli("ingest", table, "--model", "no-such-org/no-such-model", dsn=dsn)
    assert_clean_failure(result, "cannot load model 'no-such-org/no-such-model'")
    assert find_relation(conn, f"{table}_embeddings") is None


def test_unreachable_database_hides_the_password():
    dsn = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/nowhere"
    result = run_cli("ingest", "sentences", "--dsn", dsn, dsn=None)
    assert_clean_failure(result, "cannot connect to the database")
    assert "s3cr3t-pw" not in result.stderr
    keyword = run_cli("ingest", "sentences", dsn="host=127.0.0.1 port=1 user=bob password=hunter2xyz dbname=x")
    assert_clean_failure(keyword, "cannot connect")
    assert "hunter2xyz" not in keyword.stderr


HOSTILE_NAMES = ['we"ird; DROP TABLE canary; --', "spaces and 'quotes'", "ünïcödé ✓ 表"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_identifiers_name_real_objects_and_run_nothing_else(dsn, conn, tables, name):
    canary = tables.name("canary")
    source = tables.name(name)[:40]
    tables.created += [
        source,
        f"{source}_embeddings",
        *(f"{source}_embedding_{k}" for k in SIDE_TABLES),
    ]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (n int)").format(sql.Identifier(canary)))
        cur.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(canary)))
        cur.execute(
            sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} text)").format(
                sql.Identifier(source), sql.Identifier(f"id {name}"), sql.Identifier(f"text {name}")
            )
        )
        cur.execute(sql.SQL("INSERT INTO {} VALUES (1, 'hello'), (2, 'world')").format(sql.Identifier(source)))
        cur.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
        before = {row[0] for row in cur.fetchall()}
    result = run_cli("ingest", source, "--id-column", f"id {name}", "--text-column", f"text {name}", "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 2
    with conn.cursor() as cur:
        cur.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
        after = {row[0] for row in cur.fetchall()}
        cur.execute(sql.SQL("SELECT n FROM {}").format(sql.Identifier(canary)))
        assert cur.fetchall() == [(1,)]
    expected = {f"{source}_embeddings", *(f"{source}_embedding_{k}" for k in SIDE_TABLES)}
    assert after - before == expected  # the tables embedlib makes, and nothing else

    # the same names, one character off, name nothing: one line, nothing created
    missing = run_cli("ingest", source + ";", dsn=dsn)
    assert_clean_failure(missing, "does not exist")
    wrong_column = run_cli("ingest", source, "--id-column", f"id {name}", "--text-column", f"text {name}'", dsn=dsn)
    assert_clean_failure(wrong_column, "has no column")
