"""Secrets never show: DSN passwords in every form, parseable or not (service keys: test_service_faults)."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest
from psycopg2 import sql

from embedlib.db.session import connect
from embedlib.redaction import normalize_dsn, redact, remember_secret
from tests.processes import assert_clean_failure, run_cli

PASSWORD = "p@ss/w%rd:x?"  # every character that cuts a URL in the wrong place


def socket_dsn(dsn: str, user: str, password: str) -> str:
    """The test server's URL DSN (a Unix socket) for ``user``, the password typed raw, as users do."""
    parts = urllib.parse.urlsplit(dsn)
    return f"postgresql://{user}:{password}@/{parts.path.lstrip('/')}?{parts.query}"


@pytest.fixture
def role(conn):
    name = f"r_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (PASSWORD,))
    yield name
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_url_password_with_reserved_characters_connects(dsn, role):
    connection = connect(socket_dsn(dsn, role, PASSWORD))
    with connection.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (role,)
    connection.close()
    assert normalize_dsn("postgresql://u:p%41@h/db") == "postgresql://u:pA@h/db"  # a valid escape stays an escape


@pytest.mark.parametrize(
    "bad_dsn",
    [
        f"postgresql://u:{PASSWORD}@127.0.0.1:1/db",
        f"postgresql://u:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:1/db",
        f"host=127.0.0.1 port=1 user=u password='{PASSWORD}'",
        f"host=127.0.0.1 port=1 password={PASSWORD} user",  # malformed: libpq quotes a piece of it
        f"postgresql://u:{PASSWORD}@[::1:1/db",  # malformed host
    ],
    ids=["url raw", "url encoded", "keyword", "malformed keyword", "malformed url"],
)
def test_no_form_of_a_dsn_shows_its_password(bad_dsn):
    for where in ({"args": ("--dsn", bad_dsn), "env": {}}, {"args": (), "env": {"EMBEDLIB_DSN": bad_dsn}}):
        result = run_cli("ingest", "sentences", *where["args"], dsn=None, env=where["env"])
        assert_clean_failure(result, "database")
        for form in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), "w%rd", "rd:x"):
            assert form not in result.stderr, result.stderr


def test_environment_secrets_are_known_to_the_redactor(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "hunter2-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:env-url-secret@db.example/app")
    echoed = "server said: password hunter2-secret refused; dsn was env-url-secret"
    assert redact(echoed) == "server said: password *** refused; dsn was ***"
    result = run_cli("ingest", "sentences", "--dsn", "host=127.0.0.1 port=1 user=hunter2-secret", dsn=None,
                     env={"PGPASSWORD": "hunter2-secret"})  # fmt: skip
    assert_clean_failure(result, "cannot connect to the database")
    assert "hunter2-secret" not in result.stderr


def test_a_short_secret_is_masked_alone_but_never_garbles_words():
    remember_secret("at")
    assert redact("cannot connect to the database at host") == "cannot connect to the database *** host"
    assert redact("password=at user=x") == "password=*** user=x"
