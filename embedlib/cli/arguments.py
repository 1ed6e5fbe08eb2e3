"""What every command's arguments share: the parser that fails in one line, number types, and the
option groups several commands take (database, running, source table, target)."""

from __future__ import annotations

import argparse
from typing import NamedTuple, NoReturn

from embedlib import redaction
from embedlib.options import DEFAULT_MODEL, env_dsn, is_amount
from embedlib.run.executors import AUTO, EXECUTORS


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        # redacted: a DSN typed where another argument goes is quoted back ("got 'postgresql://...'")
        self.exit(2, f"{self.prog}: error: {redaction.redact(message)} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    return int_at_least(text, 1)


def int_at_least(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {lowest}, got {value}")
    return value


def seconds(text: str) -> float:
    return _amount(text, "seconds")


def milliseconds(text: str) -> float:
    return _amount(text, "milliseconds")


def _amount(text: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
    if not is_amount(value):  # the check Settings makes: no NaN, no infinity
        raise argparse.ArgumentTypeError(f"expected a finite number of {unit} >= 0, got {text!r}")
    return value


class Parents(NamedTuple):
    """Option groups, each a parent parser that commands include."""

    database: argparse.ArgumentParser
    running: argparse.ArgumentParser
    source: argparse.ArgumentParser  # the source table and its columns: every command that takes a table
    target: argparse.ArgumentParser


def parents() -> Parents:
    database = Parser(add_help=False)
    database.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: $EMBEDLIB_DSN, $DATABASE_URL, else the embedded server)",
    )

    running = Parser(add_help=False)
    running.add_argument(
        "--workers",
        type=positive_int,
        help="parallel workers: writer threads (pipelined), threads, or processes "
        "(default: $EMBED_WORKERS, else the executor's own)",
    )
    running.add_argument(
        "--executor",
        choices=[AUTO, *EXECUTORS],
        default=AUTO,
        help="how batches run (default: auto = pipelined: one encoder, or one per worker for a service URL, "
        "with reads and writes overlapped; threaded with --autoscale)",
    )
    running.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster for --executor ray (default: $RAY_ADDRESS, else a local Ray instance)",
    )
    running.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model name, local path, or the URL of an OpenAI-compatible embeddings service, "
        "http://host:port/v1[#model] (default: %(default)s)",
    )
    running.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    running.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")

    # The source table and its columns (every command that takes a table), and the target.
    source = Parser(add_help=False)
    source.add_argument("table", help="source table (optionally schema.table)")
    source.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    source.add_argument("--id-column", default="id", help="unique id column (default: %(default)s)")
    target = Parser(add_help=False)
    target.add_argument("--target", help="table for vectors and metrics (default: TABLE_embeddings)")

    return Parents(database, running, source, target)


def dsn_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "dsn", None) or env_dsn()
