"""One redactor for everything embedlib prints, logs or stores.

Secrets enter embedlib in a few places: a DSN (URL or keyword form, given
or from the environment), ``PGPASSWORD``, and the key of an embeddings
service. Each is remembered here when it enters (``remember_dsn``,
``remember_secret``; the environment is read on every call), and every
message that leaves (stderr, warnings, the errors table) goes through
``redact``. It replaces

- every remembered secret, in each form it can take in text: as given,
  percent-encoded and percent-decoded (a URL's password), and escaped as in
  a keyword DSN;
- whatever stands where a password or key stands, remembered or not: the
  password of any ``scheme://user:password@host`` (up to the last ``@``,
  since a password may hold one), ``password=...`` in keyword and query
  form, and ``Bearer ...`` tokens (a service that echoes its request's
  headers).

A secret shorter than ``SHORT_SECRET`` characters is replaced only where it
stands alone, not inside a longer word: "at" inside "database" is not the
password, and masking it would garble every message.

Log records of embedlib's loggers are redacted too: get them with
``get_logger``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse

MASK = "***"
SHORT_SECRET = 6
SECRET_ENV_VARS = ("PGPASSWORD", "EMBEDLIB_API_KEY", "OPENAI_API_KEY")
DSN_ENV_VARS = ("EMBEDLIB_DSN", "DATABASE_URL")

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>\S*)(?=@)", re.I)
# A quoted value runs to its closing quote, and on to the next space: what is glued to it (''0000)
# is the same malformed token, and a piece of the same password.
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?[^\s&]*|[^\s&]+)", re.I)
# In a DSN only (never in other text, where "password authentication" is no secret): whatever
# follows "password", with or without its "=" (a DSN missing it is malformed, not harmless).
_LOOSE_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=?\s*('(?:[^'\\]|\\.)*'?\S*|\S+)", re.I)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<secret>[^\s\"',;]+)", re.I)
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>.*)@(?P<rest>[^@]*)$", re.I | re.S)

_lock = threading.Lock()
_remembered: set[str] = set()


def remember_secret(secret: str | None) -> None:
    """Never show ``secret`` (a password or a key), in any of its textual forms."""
    if not secret:
        return
    forms = {
        secret,
        urllib.parse.unquote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        secret.replace("\\", "\\\\").replace("'", "\\'"),
    }
    with _lock:
        _remembered.update(form for form in forms if form.strip())


def remember_dsn(dsn: str | None) -> None:
    """Never show the password of ``dsn``, whatever its form, parseable or not."""
    for password in passwords_in(dsn or ""):
        remember_secret(password)


def passwords_in(dsn: str) -> list[str]:
    """Every string that may be ``dsn``'s password: as libpq reads it, and as a malformed DSN's text suggests."""
    found = [match.group("secret") for match in _KEYWORD_PASSWORD.finditer(dsn)]
    found += _LOOSE_KEYWORD_PASSWORD.findall(dsn)
    found += [value.strip("'") for value in found]
    url = _URL.match(dsn.strip())
    if url is not None and ":" in url.group("userinfo"):
        found.append(url.group("userinfo").partition(":")[2])
    try:
        import psycopg2.extensions

        parsed = psycopg2.extensions.parse_dsn(dsn).get("password")
    except Exception:  # malformed: the patterns above are all there is to go on
        parsed = None
    if parsed:
        found.append(parsed)
    return [password for password in found if password]


def normalize_dsn(dsn: str) -> str:
    """``dsn`` with a URL's user and password percent-encoded, so that libpq reads them as given.

    A password holding ``@``, ``/``, ``?`` or a ``%`` that starts no escape
    is what users type; libpq would cut the URL at the wrong place (and then
    quote a piece of the password in its error). Valid ``%XX`` escapes are
    kept as escapes. Keyword DSNs are returned as they are.
    """
    url = _URL.match(dsn.strip())
    if url is None:
        return dsn
    user, colon, password = url.group("userinfo").partition(":")

    def encode(part: str) -> str:
        return urllib.parse.quote(urllib.parse.unquote(part), safe="")

    userinfo = encode(user) + (colon + encode(password) if colon else "")
    return f"{url.group('scheme')}{userinfo}@{url.group('rest')}"


def redact(text: str) -> str:
    """``text`` with every secret embedlib knows of, and anything standing where one would, masked."""
    for secret in _known_secrets():  # first: a pattern below could cut a known secret in two
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])", MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    text = _KEYWORD_PASSWORD.sub(rf"\g<head>{MASK}", text)
    return _BEARER.sub(rf"\g<head>{MASK}", text)


def _known_secrets() -> list[str]:
    """Remembered secrets and those of the environment, longest first (so no longer one is half-masked)."""
    for name in SECRET_ENV_VARS:
        remember_secret(os.environ.get(name))
    for name in DSN_ENV_VARS:
        remember_dsn(os.environ.get(name))
    with _lock:
        secrets = list(_remembered)
    return sorted((secret for secret in secrets if secret != MASK), key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Redacts a record's message (formatted with its arguments) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are redacted (a logger's filters are its own: set on each)."""
    logger = logging.getLogger(name)
    if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
