"""The errors embedlib raises on purpose.

Every one of them is a problem the user can fix (a typo, a missing table, a
server that is down), so the CLI prints its message on one line and exits 2.
Messages are lowercase, name the object with ``!r``, and never contain a
password: DSNs are redacted before they reach an error (see ``redaction``).

Each error also says, as attributes, what a program needs to act on it:
``transient`` is True where the same call may work later unchanged (a
database that stayed away longer than ``reconnect_s``, a service that kept
failing), False where something must change first (an option, a table, a key).
"""

from __future__ import annotations


class EmbedlibError(Exception):
    """Base class: a problem with the input or the environment, not a bug."""

    exit_code = 2

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[object, ...]:
        # With its attributes: an error raised in a worker process or a Ray actor comes back whole.
        return _restore, (type(self), str(self), dict(self.__dict__))


class ConfigError(EmbedlibError):
    """An invalid option or setting."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option  # the setting at fault, where one is


class DatabaseError(EmbedlibError):
    """The database cannot be reached, or refused what embedlib needs."""


class SchemaError(EmbedlibError):
    """A table or column is missing or of the wrong kind."""


class ModelError(EmbedlibError):
    """The model cannot be found or loaded."""


class EncoderUnavailable(ModelError):
    """The encoder cannot work at all for now (a service down, a key refused): no text is to
    blame, so the run stops instead of filing texts as failed (see failures.isolate_failures).
    ``status`` is the service's HTTP status where it gave one."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message, transient=transient)
        self.status = status


def _restore(cls: type[EmbedlibError], message: str, attributes: dict[str, object]) -> EmbedlibError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (psycopg2 adds DETAIL/HINT lines), else its class name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
