"""The errors embedlib raises on purpose.

Every one of them is a problem the user can fix (a typo, a missing table, a
server that is down), so the CLI prints its message on one line and exits 2.
Messages are lowercase, name the object with ``!r``, and never contain a
password: DSNs are redacted before they reach an error (see ``db.redact``).
"""

from __future__ import annotations


class EmbedlibError(Exception):
    """Base class: a problem with the input or the environment, not a bug."""

    exit_code = 2


class ConfigError(EmbedlibError):
    """An invalid option or setting."""


class DatabaseError(EmbedlibError):
    """The database cannot be reached, or refused what embedlib needs."""


class SchemaError(EmbedlibError):
    """A table or column is missing or of the wrong kind."""


class ModelError(EmbedlibError):
    """The model cannot be found or loaded."""


class EncoderUnavailable(ModelError):
    """The encoder cannot work at all for now (a service down, a key refused): no text is to
    blame, so the run stops instead of filing texts as failed (see failures.isolate_failures)."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (psycopg2 adds DETAIL/HINT lines), else its class name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
