"""Properties over generated input (issue 14, "What it must show"), with hypothesis.

1. Any table and column name PostgreSQL can hold (unicode, spaces, quotes, dots, upper case,
   emoji, up to 63 bytes) and any texts (NULL, blank, very long, right-to-left, combining marks)
   are embedded exactly once, or refused in one line with nothing written.
2. No generated password appears in output, logs or tables, in any form, whatever the form of
   the DSN that holds it (URL raw or percent-encoded, keyword raw or quoted, malformed ones,
   ``PGPASSWORD``), and no failure is a traceback.

Examples are few (each one makes tables, or runs the command line): hypothesis looks for the
odd input, the other suites pin the ordinary ones. No example database is kept (``database=None``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from unittest import mock

import numpy as np
import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st
from psycopg2 import sql

from embedlib import Ingestor, cli, redaction
from embedlib.db.relations import MAX_IDENTIFIER_BYTES
from embedlib.db.session import connect
from embedlib.errors import EmbedlibError
from embedlib.store.schema import SIDE_TABLES
from embedlib.testing import HashEncoder

ENCODER = HashEncoder(dimension=8)
FEW = settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------------------------------

# Any character PostgreSQL stores in a UTF-8 identifier or text: everything but NUL (and the
# surrogates, which are not characters UTF-8 can encode).
ANY_CHAR = st.characters(codec="utf-8", exclude_characters="\x00")
NAME_PIECES = st.sampled_from(
    [
        " ",
        '"',
        '""',
        ".",
        "a.b",
        "'",
        "UPPER",
        "MiXeD",
        "😀",
        "\U0001f469\u200d\U0001f469\u200d\U0001f467",
        "é",
        "e\u0301",
        "שלום",
        "ـمرحبا",
        "表",
        ";",
        "-",
        "\t",
    ]
)
SYSTEM_COLUMNS = {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"}


def fit_identifier(name: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """``name`` cut to the bytes PostgreSQL keeps of an identifier, or to ``limit`` (at a character boundary)."""
    return name.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


NAMES = (
    st.lists(st.one_of(st.text(ANY_CHAR, min_size=1, max_size=6), NAME_PIECES), min_size=1, max_size=10)
    .map("".join)
    .map(fit_identifier)
    .filter(bool)
)
COLUMNS = NAMES.filter(lambda name: name != "id" and name not in SYSTEM_COLUMNS)

SPECIAL_TEXTS = st.sampled_from(
    [
        "",
        " ",
        " \t\r\n ",
        "\u00a0",  # no-break space
        "\u3000",  # ideographic space
        "\x1c\x1d\x1e\x1f",  # Python's str.isspace says yes, POSIX [[:space:]] no
        "\u0085\u2028\u2029",
        "\u200b",  # zero-width space: not whitespace to anyone
        "שלום עולם",
        "مرحبا بالعالم",
        "\u202eevil\u202c",
        "e\u0301\u0301\u0301\u0301",
        "\U0001f469\u200d\U0001f469\u200d\U0001f467 family",
        "'; DROP TABLE x; --",
        "a\\b\\'c\"d",
    ]
)
LONG_TEXTS = st.builds(
    lambda piece, times: piece * times, st.text(ANY_CHAR, min_size=1, max_size=5), st.integers(500, 20_000)
)
TEXTS = st.one_of(st.none(), st.text(ANY_CHAR, max_size=40), SPECIAL_TEXTS, LONG_TEXTS)


def is_blank(text: str | None) -> bool:
    """What README calls blank: NULL, empty or whitespace only."""
    return text is None or not text.strip()


# --- database helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def connection(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(dsn, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def public_tables(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def tables_of(table: str) -> set[str]:
    """The source and what a run makes of it: the default target and the tables beside it."""
    return {table, f"{table}_embeddings", *(f"{table}_embedding_{kind}" for kind in SIDE_TABLES)}


def create_source(conn: psycopg2.extensions.connection, table: str, column: str, texts: Sequence[str | None]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, {} text)").format(
                sql.Identifier("public", table), sql.Identifier(column)
            )
        )
        # A name with "%" in it would read as a placeholder where the statement has parameters.
        table_ident = sql.Identifier("public", table).as_string(conn).replace("%", "%%")
        cur.executemany(f"INSERT INTO {table_ident} VALUES (%s, %s)", list(enumerate(texts, start=1)))


def stored_vectors(conn: psycopg2.extensions.connection, target: str) -> dict[int, np.ndarray]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, embedding::text FROM {}").format(sql.Identifier("public", target)))
        return {row_id: np.array(vec.strip("[]").split(","), dtype=np.float32) for row_id, vec in cur.fetchall()}


@contextlib.contextmanager
def example_tables(dsn: str, table: str) -> Iterator[tuple[psycopg2.extensions.connection, set[str]]]:
    """A connection, and the tables of schema public before the example; the example's own tables
    (``tables_of(table)``, none of which may exist before) are dropped after it, and no others:
    the database may be a shared one (EMBEDLIB_TEST_DSN)."""
    ours = {name for name in tables_of(table) if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES}
    with connection(dsn) as conn:
        before = public_tables(conn)
        assume(not ours & before)
        try:
            yield conn, before
        finally:
            with conn.cursor() as cur:
                for name in ours:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("public", name)))


# --- 1. names and texts: embedded exactly once, or refused in one line -----------------------------


SHORT_ENOUGH = MAX_IDENTIFIER_BYTES - len("_embedding_errors")  # bytes of a table name whose side tables fit


def fits(table: str) -> bool:
    """Whether the default target's longest side table name (``<table>_embedding_errors``) fits."""
    longest = max([f"{table}_embeddings", *(f"{table}_embedding_{kind}" for kind in SIDE_TABLES)], key=len)
    return len(longest.encode("utf-8")) <= MAX_IDENTIFIER_BYTES


def accepted(table: str, column: str = "text") -> bool:
    """Whether embedlib takes these names: side tables that fit, and no '%' (psycopg2 reads it as a
    parameter marker even in a quoted name, so such names are refused in one line)."""
    return fits(table) and "%" not in table + column


@FEW
@given(table=NAMES, column=COLUMNS, texts=st.lists(TEXTS, max_size=8))
@example(table="weird.name", column="Text Column", texts=["one", None, " ", "two"])
@example(table='"q"."x"', column='"', texts=["\u00a0", "\x1c", "ok"])
@example(table="A" * 46, column="😀" * 15, texts=["fits exactly"])  # A..A_embedding_errors: 63 bytes
@example(table="B" * 47, column="c", texts=["one byte too long"])
@example(table="100% real", column="%s %(x)s", texts=["percent"])
def test_any_names_and_texts_are_embedded_once_or_refused_in_one_line(dsn, table, column, texts):
    target = f"{table}_embeddings"
    with example_tables(dsn, table) as (conn, before):
        create_source(conn, table, column, texts)
        try:
            report = Ingestor(dsn, table=table, text_column=column, model=ENCODER, executor="serial").run()
        except EmbedlibError as exc:
            note(f"refused: {exc}")
            event("refused")
            assert "\n" not in str(exc)
            assert public_tables(conn) - before == {table}, "a refused run wrote tables"
            assert not accepted(table, column), f"a name that fits was refused: {exc}"
            return
        assert accepted(table, column), "a name too long for its side tables, or with a '%', was accepted"
        event("embedded")
        assert report.target == f"public.{target}"
        wanted = {row_id: text for row_id, text in enumerate(texts, start=1) if not is_blank(text)}
        vectors = stored_vectors(conn, target)
        assert set(vectors) == set(wanted)  # one row per id (the target's primary key), none for blank ones
        for row_id, text in wanted.items():
            np.testing.assert_allclose(vectors[row_id], ENCODER.encode([text])[0], atol=1e-5)
        assert report.rows == len(wanted)
        assert report.skipped == len(texts) - len(wanted)
        assert report.failed == 0
        assert public_tables(conn) - before <= tables_of(table), "tables under other names"

        again = Ingestor(dsn, table=table, text_column=column, model=ENCODER, executor="serial").run()
        assert (again.rows, again.encoded, again.failed) == (0, 0, 0)
        assert stored_vectors(conn, target).keys() == vectors.keys()


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=NAMES.map(lambda name: fit_identifier(name, SHORT_ENOUGH)).filter(bool), qualified=st.booleans())
@example(table="weird.name", qualified=False)
@example(table="weird.name", qualified=True)
@example(table='we"ird.na"me', qualified=False)
@example(table="%", qualified=True)
def test_a_quoted_name_is_the_table_literally_so_named(dsn, table, qualified):
    quoted = '"' + table.replace('"', '""') + '"'
    given_name = f"public.{quoted}" if qualified else quoted
    with example_tables(dsn, table) as (conn, _):
        create_source(conn, table, "text", ["one", "two", None])
        if not accepted(table):
            with pytest.raises(EmbedlibError, match="holds a '%'"):
                Ingestor(dsn, table=given_name, model=ENCODER, executor="serial").run()
            return
        report = Ingestor(dsn, table=given_name, model=ENCODER, executor="serial").run()
        assert (report.rows, report.skipped, report.target) == (2, 1, f"public.{table}_embeddings")
        assert set(stored_vectors(conn, f"{table}_embeddings")) == {1, 2}


# --- 2. passwords: never shown, never a traceback -------------------------------------------------

# Printable characters (letters, marks, numbers, punctuation, symbols), and the ones that mean
# something in a DSN, with percent escapes valid and not.
PASSWORD_PIECES = st.one_of(
    st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S")),
    st.sampled_from(
        ["%", "/", "@", ":", "'", '"', "\\", " ", "?", "#", "=", "&", "[", "]", "%41", "%2F", "%zz", "\\'"]
    ),
)
PASSWORDS = st.lists(PASSWORD_PIECES, min_size=6, max_size=20).map("".join).filter(lambda p: p.strip())
NOWHERE = "127.0.0.1"  # port 1 on loopback: nothing listens, the connection is refused at once


def dsn_forms(password: str) -> dict[str, str]:
    """Every form a DSN holding ``password`` takes, as users type it, well-formed or not."""
    encoded = urllib.parse.quote(password, safe="")
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return {
        "url raw": f"postgresql://user:{password}@{NOWHERE}:1/db",
        "url encoded": f"postgresql://user:{encoded}@{NOWHERE}:1/db",
        "url query encoded": f"postgresql://user@{NOWHERE}:1/db?password={encoded}",
        "keyword raw": f"host={NOWHERE} port=1 user=u password={password}",
        "keyword raw first": f"password={password} host={NOWHERE} port=1 user=u",
        "keyword quoted": f"host={NOWHERE} port=1 user=u password='{escaped}'",
        "keyword missing =": f"host={NOWHERE} port=1 user=u password {password}",
        "keyword unterminated quote": f"host={NOWHERE} port=1 user=u password='{escaped}",
        "url unterminated bracket": f"postgresql://user:{password}@[{NOWHERE}:1/db",
        "url encoded unterminated bracket": f"postgresql://user:{encoded}@[{NOWHERE}:1/db",
    }


PGPASSWORD_DSN = f"host={NOWHERE} port=1 user=u dbname=db"
SECRET_VARS = ("EMBEDLIB_DSN", "DATABASE_URL", *redaction.SECRET_ENV_VARS)


def password_forms(password: str) -> set[str]:
    """The forms a password takes in text: as given, percent-encoded, percent-decoded."""
    forms = {password, urllib.parse.quote(password, safe=""), urllib.parse.unquote(password)}
    return {form for form in forms if form.strip()}


def assert_hidden(password: str, *outputs: str, pieces: bool = False) -> None:
    """No form of ``password`` in ``outputs``; with ``pieces``, not even a piece of it as libpq tokenizes
    a malformed DSN (split at spaces and quotes), of SHORT_SECRET characters or more."""
    if pieces:
        for piece in re.split(r"[\s\"']+", password):
            for output in outputs:
                if len(piece) >= redaction.SHORT_SECRET:
                    assert piece not in output, f"{piece!r}, a piece of {password!r}, shown in {output!r}"
    for form in password_forms(password):
        for output in outputs:
            if len(form) >= redaction.SHORT_SECRET:
                assert form not in output, f"{form!r} shown in {output!r}"
            else:  # a short decoded form ("%41%42" -> "AB") counts where it stands alone, as redact masks it
                alone = rf"(?<![^\W_]){re.escape(form)}(?![^\W_])"
                assert not re.search(alone, output), f"{form!r} shown in {output!r}"


def assert_one_clean_line(status: int, stdout: str, stderr: str) -> None:
    assert status == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("embedlib: error: "), stderr


@contextlib.contextmanager
def fresh_secrets() -> Iterator[None]:
    """Redaction as in a new process: no secret remembered from another example."""
    with mock.patch.object(redaction, "_remembered", set()):
        yield


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    with mock.patch.dict(os.environ):
        for name in SECRET_VARS:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield


class Lines(logging.Handler):
    """Log records as the command prints them (through the redacting filter its handler has)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(redaction.RedactingFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main_in_process(argv: list[str]) -> tuple[int, str, str, str]:
    """``cli.main(argv)``: status, stdout, stderr, and the log lines; the signal handlers it installs
    are put back as they were."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    out, err, logs = io.StringIO(), io.StringIO(), Lines()
    root = logging.getLogger()
    root.addHandler(logs)
    try:
        with fresh_secrets(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(argv)
    finally:
        root.removeHandler(logs)
        signal.set_wakeup_fd(-1)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return status, out.getvalue(), err.getvalue(), "\n".join(logs.lines)


def runs(password: str, ways: Iterable[str] = ("--dsn", "EMBEDLIB_DSN")) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, arguments, environment) of the ways the command gets a DSN holding ``password``: each
    form of DSN in each of ``ways`` (taken in turn, one way a form, where ``ways`` is an iterator)."""
    cases = []
    for form, dsn in dsn_forms(password).items():
        for way in ways if isinstance(ways, Sequence) else [next(iter(ways))]:
            if way == "--dsn":
                cases.append((f"{form} in --dsn", ["ingest", "sometable", "--dsn", dsn], {}))
            else:
                cases.append((f"{form} in {way}", ["ingest", "sometable"], {way: dsn}))
    cases.append(("PGPASSWORD", ["ingest", "sometable", "--dsn", PGPASSWORD_DSN], {"PGPASSWORD": password}))
    return cases


NASTY = "p@ss w/o:'\"\\?#=%zz%41 ünï"
# A keyword DSN typed with a passphrase unquoted: libpq quotes the word it stopped at, which holds
# a quote itself, so pairing the quotes of its message shows "battery".
PASSPHRASE = 'correct horse"battery staple'


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS)
@example(password=NASTY)
@example(password=PASSPHRASE)
def test_no_password_is_shown_by_the_command_in_process(password):
    for label, argv, env in runs(password):
        with environment(**env):
            status, stdout, stderr, logs = main_in_process(argv)
        note(f"{label}: {stderr.strip()}")
        assert_one_clean_line(status, stdout, stderr)
        assert_hidden(password, stdout, stderr, logs, pieces=True)


@settings(max_examples=1, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS, env_first=st.booleans())
@example(password=NASTY, env_first=False)
def test_no_password_is_shown_by_the_command_in_a_process_of_its_own(password, env_first):
    """The real thing, a few times (a process costs a second of imports): each form once, given with
    --dsn or in EMBEDLIB_DSN by turns."""
    base = {k: v for k, v in os.environ.items() if k not in (*SECRET_VARS, "EMBEDLIB_DEBUG", "EMBED_WORKERS")}
    ways = itertools.cycle(["EMBEDLIB_DSN", "--dsn"] if env_first else ["--dsn", "EMBEDLIB_DSN"])
    started = [
        (
            label,
            subprocess.Popen(
                [sys.executable, "-m", "embedlib", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**base, **env},
            ),
        )
        for label, argv, env in runs(password, ways)
    ]
    for label, proc in started:
        stdout, stderr = proc.communicate(timeout=120)
        note(f"{label}: {stderr.strip()}")
        assert_one_clean_line(proc.returncode, stdout, stderr)
        assert_hidden(password, stdout, stderr, pieces=True)


@settings(max_examples=200, deadline=None, database=None)
@given(password=PASSWORDS, before=st.text(max_size=10), after=st.text(max_size=10))
@example(password=NASTY, before="", after="")
@example(password="&secret\\1", before="", after="")  # keyword raw: libpq reads "&secret1"
@example(password="''0000", before="", after="")  # a quoted empty value with the rest glued to it
def test_redact_hides_the_password_of_every_dsn_form(password, before, after):
    for form, dsn in dsn_forms(password).items():
        with fresh_secrets(), environment():
            redaction.remember_dsn(dsn)
            shown = redaction.redact(f"{before} could not use {dsn} {after}")
        note(f"{form}: {shown!r}")
        assert_hidden(password, shown)
    with fresh_secrets(), environment(PGPASSWORD=password):
        assert_hidden(password, redaction.redact(f"{before} server said: bad password {password} {after}"))
    with fresh_secrets(), environment(EMBEDLIB_DSN=dsn_forms(password)["keyword quoted"]):
        assert_hidden(password, redaction.redact(f"{before} bad password {password} {after}"))


class QuotingEncoder(HashEncoder):
    """An encoder whose service fails on the text "poison" with a message quoting what it was given."""

    def __init__(self, message: str) -> None:
        super().__init__(dimension=8)
        self.message = message

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if "poison" in texts:
            raise RuntimeError(self.message)
        return super().encode(texts)


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=PASSWORDS, password=PASSWORDS)
@example(key="sk-NASTY/key+=", password=NASTY)
def test_no_key_or_password_reaches_the_errors_table_or_the_log(dsn, key, password):
    """A service's complaint quoting the key (from EMBEDLIB_API_KEY) and the DSN's password is stored
    in the errors table and logged, masked. The test server trusts local connections, so a password
    added to its DSN is ignored (a DSN that has one already keeps it, and only the key is tried)."""
    existing = psycopg2.extensions.parse_dsn(dsn).get("password")
    if existing:
        password, with_password = existing, dsn
    else:
        with_password = psycopg2.extensions.make_dsn(dsn, password=password)
    encoded_key, encoded_password = urllib.parse.quote(key, safe=""), urllib.parse.quote(password, safe="")
    message = (
        f"401 from the service: key {key} ({encoded_key}) refused; Authorization: Bearer {key}; "
        f"password {password} ({encoded_password}); dsn {with_password}"
    )
    table = f"keys_{uuid.uuid4().hex[:8]}"
    logs = Lines()
    with environment(EMBEDLIB_API_KEY=key), example_tables(dsn, table) as (conn, _):
        create_source(conn, table, "text", ["fine", "poison", "also fine"])
        logging.getLogger().addHandler(logs)
        try:
            report = Ingestor(with_password, table=table, model=QuotingEncoder(message), executor="serial").run()
        finally:
            logging.getLogger().removeHandler(logs)
        assert (report.rows, report.failed) == (2, 1)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT error FROM {}").format(sql.Identifier("public", f"{table}_embedding_errors")))
            stored = [row[0] for row in cur.fetchall()]
    note(f"stored: {stored}; logged: {logs.lines}")
    assert len(stored) == 1 and "RuntimeError" in stored[0]
    for secret in (key, password):
        assert_hidden(secret, *stored, *logs.lines)


@settings(max_examples=100, deadline=None, database=None)
@given(
    secret=PASSWORDS,
    context=st.sampled_from(
        ["password={}", "password = {}", "?password={}&sslmode=disable", "Authorization: Bearer {}", "key {}"]
    ),
)
@example(secret="correct horse battery", context="password={}")
@example(secret="correct horse battery", context="Authorization: Bearer {}")
def test_a_remembered_secret_is_masked_whole_wherever_it_stands(secret, context):
    """A secret redact knows of is masked whole, also where a pattern (``password=``, ``Bearer``)
    would mask only its first word."""
    with fresh_secrets(), environment():
        redaction.remember_secret(secret)
        shown = redaction.redact(f"failed: {context.format(secret)} (retrying)")
    note(shown)
    assert_hidden(secret, shown, pieces=True)


def test_a_short_password_is_masked_only_where_it_stands_alone():
    with fresh_secrets(), environment():
        redaction.remember_dsn(f"postgresql://user:at@{NOWHERE}:1/db")
        assert redaction.redact("cannot connect to the database") == "cannot connect to the database"
        assert redaction.redact("the password is at the end") == "the password is *** the end"
        assert redaction.redact("at") == "***"


@settings(max_examples=100, deadline=None, database=None)
@given(
    secret=st.text(st.characters(categories=("Ll", "Lu", "Nd")), min_size=1, max_size=redaction.SHORT_SECRET - 1),
    prefix=st.text(st.characters(categories=("Ll", "Lu", "Nd")), max_size=4),
    suffix=st.text(st.characters(categories=("Ll", "Lu", "Nd")), max_size=4),
)
def test_a_short_password_does_not_garble_longer_words(secret, prefix, suffix):
    word = f"{prefix}{secret}{suffix}"
    with fresh_secrets(), environment():
        redaction.remember_secret(secret)
        if prefix or suffix:
            assert redaction.redact(f"({word})") == f"({word})"
        assert redaction.redact(f"({secret}) [{secret}]") == "(***) [***]"
