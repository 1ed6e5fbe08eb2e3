"""What every command's arguments share: the parser that fails in one line, number types, and the
option groups several commands take (database, running, source table, target)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from embedlib import redaction
from embedlib.options import AUTO, OPTIONS, default, env_dsn
from embedlib.rules import Amount, Anything, Choice, Flag, Name, Text, Whole
from embedlib.run.executors import EXECUTORS

if TYPE_CHECKING:
    from embedlib.run.ingestor import Ingestor


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        # redacted: a DSN typed where another argument goes is quoted back ("got 'postgresql://...'")
        self.exit(2, f"{self.prog}: error: {redaction.redact(message)} (see {self.prog} --help)\n")


positive_int = Whole(1).from_text
milliseconds = Amount("milliseconds").from_text


def add_option(parser: argparse.ArgumentParser, name: str, **overrides: Any) -> None:
    """The command-line argument of setting ``name``, as ``options.Settings`` defines it."""
    spec = OPTIONS[name]
    assert spec.flag is not None, f"{name} is not a command-line option"
    if isinstance(spec.rule, Flag):
        parser.add_argument(spec.flag, action="store_true", help=spec.help, **overrides)
        return
    details: dict[str, Any] = {"default": default(name), "help": spec.help, "metavar": spec.metavar}
    if isinstance(spec.rule, Choice):
        details["choices"] = spec.rule.choices
    elif not isinstance(spec.rule, (Name, Text, Anything)):
        details["type"] = spec.rule.from_text
    details.update(overrides)
    parser.add_argument(spec.flag, **details)


class Parents(NamedTuple):
    """Option groups, each a parent parser that commands include."""

    database: argparse.ArgumentParser
    running: argparse.ArgumentParser
    source: argparse.ArgumentParser  # the source table and its columns: every command that takes a table
    target: argparse.ArgumentParser


def parents() -> Parents:
    database = Parser(add_help=False)
    add_option(database, "dsn", default=None)  # read from the environment where it is used (dsn_of)

    running = Parser(add_help=False)
    add_option(running, "workers", default=None)  # None: $EMBED_WORKERS, read by Settings
    add_option(running, "executor", choices=[AUTO, *EXECUTORS])
    add_option(running, "ray_address")
    add_option(running, "model")
    running.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    running.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")

    # The source table and its columns (every command that takes a table), and the target.
    source = Parser(add_help=False)
    source.add_argument("table", help=OPTIONS["table"].help)
    add_option(source, "text_column")
    add_option(source, "text_template")
    add_option(source, "id_column")
    target = Parser(add_help=False)
    add_option(target, "target")

    return Parents(database, running, source, target)


def dsn_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "dsn", None) or env_dsn()


def ingestor_of(args: argparse.Namespace, **options: Any) -> Ingestor:
    """An Ingestor for the table options of a command (the source and target groups) and ``options``."""
    from embedlib.run.ingestor import Ingestor

    return Ingestor(
        dsn_of(args),
        table=args.table,
        text_column=args.text_column,
        text_template=args.text_template,
        id_column=args.id_column,
        target=args.target,
        **options,
    )
