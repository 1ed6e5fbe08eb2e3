"""Edges of the command line (issue 14: every input gets one clean line).

Bytes that are not UTF-8, an ASCII locale, a reader that goes away (``|
head``), more rows than an HNSW scan gives, NaN and infinity, Ctrl-C twice:
each ends in one line on stderr (or, for ``| head``, none) and the exit
status a Unix tool would give, never "internal error" or a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import psycopg2.extensions
import pytest
from psycopg2 import sql

from embedlib import ConfigError, Ingestor, Settings
from embedlib.db.relations import find_relation
from embedlib.db.session import connect
from embedlib.testing import HashEncoder
from embedlib.testing.service import EmbeddingService
from tests.processes import assert_clean_failure, run_cli

# Ways to run Python under an ASCII locale, and the UTF-8 one for comparison. Under LC_ALL=C
# Python coerces the locale to UTF-8 but decodes undecodable bytes to surrogates; with
# PYTHONIOENCODING=ascii its standard streams are ASCII; with coercion and UTF-8 mode off under
# POSIX, arguments, environment and streams are all ASCII.
LOCALES = {
    "utf-8": {"LC_ALL": "C.UTF-8"},
    "C": {"LC_ALL": "C", "LANG": "C"},
    "ascii-io": {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "ascii"},
    "posix": {"LC_ALL": "POSIX", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
}
_INHERITED_NOT = ("EMBEDLIB_DSN", "DATABASE_URL", "EMBED_WORKERS", "LANG", "LANGUAGE", "PYTHONIOENCODING")
_INHERITED_NOT += ("PYTHONUTF8", "PYTHONCOERCECLOCALE", "EMBEDLIB_DEBUG")


def environment(dsn: str | None, locale: str = "utf-8") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_NOT and not k.startswith("LC_")}
    if dsn:
        env["EMBEDLIB_DSN"] = dsn
    env.update(LOCALES[locale])
    return env


def run_bytes(*args: str | bytes, dsn: str | None, locale: str = "utf-8", stdin: bytes = b""):
    """The command with bytes for input; stdout decoded as UTF-8 (strictly: it must be), stderr too."""
    done = subprocess.run(
        [sys.executable, "-m", "embedlib", *args],
        input=stdin,
        capture_output=True,
        env=environment(dsn, locale),
        timeout=300,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def texts_of(conn, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT text FROM {} ORDER BY id").format(sql.Identifier(table)))
        return [row[0] for row in cur.fetchall()]


# --- 1. input is UTF-8 whatever the locale; output does not crash on it -----------------------------


@pytest.mark.parametrize("locale", sorted(LOCALES))
def test_load_reads_utf8_whatever_the_locale(dsn, conn, tables, locale):
    table = tables.name("tablé")  # a non-ASCII name: an argument, and quoted in the output
    stdin = "\ufeffcafé ✓ 表\r\nsecond\rthird\n".encode()  # a byte order mark, and all three line ends
    result = run_bytes("load", table, "-", dsn=dsn, locale=locale, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"loaded 3 rows into {table}\n"  # UTF-8 on stdout, whatever the locale
    assert texts_of(conn, table) == ["café ✓ 表", "second", "third"]


@pytest.mark.parametrize(("locale", "source"), [(locale, "-") for locale in sorted(LOCALES)] + [("posix", "file")])
def test_bytes_that_are_not_utf8_are_one_line_naming_the_line_and_nothing_is_loaded(
    dsn, conn, tables, tmp_path, locale, source
):
    data = b"fine\nstill fine \xc3\xa9\nbad \xff\xfe here\nnever read\n"
    kept = tables.source(["kept"])
    new = tables.name("new")
    for table in (kept, new):
        if source == "-":
            result = run_bytes("load", table, "-", dsn=dsn, locale=locale, stdin=data)
            where = "standard input"
        else:
            path = tmp_path / "latin.txt"
            path.write_bytes(data)
            result = run_bytes("load", table, str(path), dsn=dsn, locale=locale)
            where = repr(str(path))
        assert_clean_failure(result, f"{where} is not UTF-8 text", "line 3", r"b'\xff'")
    assert texts_of(conn, kept) == ["kept"]  # one transaction: the two good lines are not there
    assert find_relation(conn, new) is None  # nor the table that load would have made


def test_an_argument_that_is_not_utf8_is_one_line(dsn, conn, tables):
    result = run_bytes("load", b"t\xff", "-", dsn=dsn, stdin=b"text\n")
    assert_clean_failure(result, "the table given, b't\\xff', is not UTF-8 text")


@pytest.fixture(scope="module")
def service() -> Iterator[EmbeddingService]:
    """A local embeddings service (HashEncoder vectors): a stand-in model the command line can name."""
    with EmbeddingService() as running:
        yield running


@pytest.fixture(scope="module")
def indexed(dsn: str, service: EmbeddingService) -> Iterator[str]:
    """A table of 1,100 rows of ~200 characters, a few of them not ASCII, embedded by the service,
    with an HNSW index."""
    table = f"edges_{uuid.uuid4().hex[:8]}"
    texts = [f"row {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(30)) for i in range(1100)]
    texts[7] = "café ✓ 表 — non-ASCII text"
    setup = connect(dsn, autocommit=True)
    try:
        with setup.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, text text)").format(sql.Identifier(table)))
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table)), list(enumerate(texts, 1))
            )
        ingestor = Ingestor(dsn, table=table, model=service.url)
        assert ingestor.run().rows == 1100
        assert ingestor.build_index("hnsw").created
        yield table
    finally:
        with setup.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE %s", (table + "%",)
            )
            for (name,) in cur.fetchall():
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        setup.close()


@pytest.mark.parametrize("locale", ["ascii-io", "posix"])
def test_non_ascii_output_under_an_ascii_locale(dsn, indexed, service, locale):
    result = run_bytes("search", indexed, "café ✓ 表 — non-ASCII text", "-k", "3", "--model", service.url,
                       dsn=dsn, locale=locale)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split(maxsplit=2)
    assert first[1:] == ["8", "café ✓ 表 — non-ASCII text"]  # as stored, in UTF-8
    missing = run_bytes("search", "nulle_part_é", "x", "--model", service.url, dsn=dsn, locale=locale)
    assert_clean_failure(missing, "nulle_part_", "does not exist")


# --- 2. a reader that goes away ----------------------------------------------------------------------


def test_search_into_a_pipe_closed_after_one_line_exits_quietly_with_141(dsn, indexed, service):
    # 500 lines of ~200 characters: more than the pipe (64 KiB) and stdout's buffer hold, so
    # the command is still writing when the reader goes.
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedlib", "search", indexed, "row 1", "-k", "500", "--model", service.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(dsn),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as head -1 does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert first.count(b"  ") >= 2  # distance  id  text
    assert err == b""  # no "internal error", no "Exception ignored ... BrokenPipeError"


# --- 3. more rows than hnsw.ef_search allows ---------------------------------------------------------


def test_search_gives_k_rows_past_the_hnsw_ef_search_limit(dsn, indexed, service):
    # enable_seqscan off: the planner would scan 1,100 rows rather than walk the index for 1,001
    through_index = psycopg2.extensions.make_dsn(dsn, options="-c enable_seqscan=off")
    ingestor = Ingestor(through_index, table=indexed, model=service.url)
    for k, expected in ((1001, 1001), (1100, 1100), (5000, 1100)):
        matches = ingestor.search("row 5", k=k)
        assert len(matches) == len({m.id for m in matches}) == expected
        assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    result = run_cli("search", indexed, "row 5", "-k", "1001", "--model", service.url, dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1001


def test_search_falls_back_to_an_exact_scan_when_the_index_gives_fewer_than_k(dsn, conn, tables):
    table = tables.name("sparse")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, text text)").format(sql.Identifier(table)))
        cur.execute(
            sql.SQL("INSERT INTO {} SELECT i, 'sentence ' || i FROM generate_series(1, 3000) i").format(
                sql.Identifier(table)
            )
        )
    encoder = HashEncoder(16)
    ingestor = Ingestor(dsn, table=table, model=encoder)
    ingestor.run()
    ingestor.build_index("hnsw")
    with conn.cursor() as cur:  # 19 rows in 20 are another model's: filtered out after the index
        target = sql.Identifier(f"{table}_embeddings")
        cur.execute(sql.SQL("UPDATE {} SET model = 'other' WHERE id % 20 <> 0").format(target))
    # An index scan that stops early: 50 to 70 of this model's 150 rows, not 100 (measured).
    stops_early = psycopg2.extensions.make_dsn(dsn, options="-c enable_seqscan=off -c hnsw.max_scan_tuples=1")
    exact = psycopg2.extensions.make_dsn(dsn, options="-c enable_indexscan=off")
    found = Ingestor(stops_early, table=table, model=encoder).search("sentence 42", k=100)
    truth = Ingestor(exact, table=table, model=encoder).search("sentence 42", k=100)
    assert len(found) == 100
    assert {m.id for m in found} == {m.id for m in truth}


# --- 4. NaN and infinity -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -1.0])
def test_numeric_settings_refuse_nan_and_infinity(value):
    with pytest.raises(ConfigError, match="reconnect_s must be a finite number of seconds >= 0") as refused:
        Ingestor("postgresql://nowhere/x", table="t", model=HashEncoder(16), reconnect_s=value)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="finite"):
        Settings(table="t", reconnect_s=value)
    assert Settings(table="t", reconnect_s=0).reconnect_s == 0  # and a plain number is fine


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "{table}", "--reconnect-timeout", "nan"],
        ["ingest", "{table}", "--reconnect-timeout", "inf"],
        ["bench", "{table}", "10", "1", "--db-latency-ms", "NaN"],
        ["bench", "{table}", "10", "1", "--encoder-latency-ms", "infinity"],
    ],
)
def test_cli_refuses_nan_and_infinity(dsn, conn, tables, args):
    table = tables.source(["one"])
    result = run_cli(*[a.format(table=table) for a in args], dsn=dsn)
    assert_clean_failure(result, args[-2], "expected a finite number of", repr(args[-1]))
    assert find_relation(conn, f"{table}_embeddings") is None


# --- 5. Ctrl-C twice while the model loads -----------------------------------------------------------


def _mapped(pid: int, fragment: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return fragment in maps.read()
    except OSError:
        return False


@pytest.mark.model
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc/PID/maps for torch's files")
@pytest.mark.parametrize(
    ("moment", "delay", "signum"),
    [
        ("libtorch", 0.0, signal.SIGINT),  # both land while torch's libraries load: one C call
        ("libtorch", 0.5, signal.SIGINT),  # in torch's (or transformers') Python import code
        ("model.safetensors", 0.0, signal.SIGTERM),  # while the weights are read
    ],
)
def test_a_second_signal_while_the_model_loads_stops_at_once_in_one_line(dsn, tables, moment, delay, signum):
    table = tables.source(["one", "two", "three"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedlib", "ingest", table, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(dsn),
    )
    try:
        deadline = time.monotonic() + 120
        while not _mapped(proc.pid, moment):
            assert proc.poll() is None, f"ended before {moment} was loaded: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{moment} not loaded within 120 s"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signum)
        time.sleep(0.1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = err.decode().splitlines()
    assert proc.returncode == 128 + signum, err
    assert out == b""  # stopped at once: no run went on to report
    assert lines[-1] == "embedlib: interrupted", err
    assert set(lines) <= {
        "embedlib: interrupted",
        "embedlib: stopping after the batches under way (press Ctrl-C again to stop now)",
    }, err


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_at_once_is_bounded_even_when_unwinding_hangs(tmp_path, signals):
    # A command whose clean-up hangs (a thread stuck in a model call, say): the first signal
    # stops it at once (no graceful stop outside an ingest run), and the process ends within
    # STOP_GRACE_S of it, or at once at the next signal.
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from embedlib import cli

            def load(args):
                try:
                    print("ready", flush=True)
                    time.sleep(60)
                finally:
                    time.sleep(60)  # unwinding that hangs

            cli.load.run = load
            cli.signals.STOP_GRACE_S = 2.0
            sys.exit(cli.main(["load", "t", "-"]))
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(None)
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if signals == 2:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - started
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err == b"embedlib: interrupted\n" and out == b""
    assert (1.9 < took < 10) if signals == 1 else (took < 1.9), took


# --- 7. every line printed is redacted ---------------------------------------------------------------


def test_warnings_are_redacted_with_the_dsn_password_given_on_the_command_line(tmp_path):
    # A command whose work logs warnings holding a password: in a URL, and bare (from a library
    # that knows nothing of DSNs); only --dsn says what the bare one is.
    script = tmp_path / "warn.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, sys
            from embedlib import cli

            def load(args):
                logging.getLogger("embedlib.somewhere").warning("retrying %s", args.dsn)
                logging.getLogger("urllib3").warning("server said: bad password pw-Secret-42")
                return 0

            cli.load.run = load
            sys.exit(cli.main(["load", "t", "-", "--dsn", "postgresql://alice:pw-Secret-42@db.example/x"]))
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=environment(None))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("embedlib: warning: ") for line in lines), result.stderr
    assert "pw-Secret-42" not in result.stderr
    assert "postgresql://alice:***@db.example/x" in lines[0]


def test_a_dsn_typed_where_another_argument_goes_is_not_quoted_back_with_its_password():
    result = run_cli("ingest", "t", "postgresql://alice:s3cret-pw@host/db", dsn=None)
    assert_clean_failure(result, "expected a whole number", "postgresql://alice:***@host/db")
    assert "s3cret-pw" not in result.stderr
