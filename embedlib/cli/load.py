"""``embedlib load``: lines of text into a table, so there is something to embed."""

from __future__ import annotations

import argparse
import sys
from typing import IO

from embedlib.cli.arguments import Parents, dsn_of
from embedlib.cli.text import utf8_lines
from embedlib.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    load = commands.add_parser(
        "load", parents=[parents.database], help="load a text file, one text per line, into a table"
    )
    load.add_argument("table", help="table to create or append to, with columns (id, text)")
    load.add_argument("file", help="UTF-8 text file, or - for standard input")
    load.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    load.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedlib.db.session import connect, resolve_dsn
    from embedlib.source.loader import load_lines

    if args.file == "-":
        if sys.stdin is None:
            raise ConfigError("standard input is closed: give a file, or text on standard input")
        stream: IO[bytes] = sys.stdin.buffer
        where, owned = "standard input", False
    else:
        try:
            stream = open(args.file, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file!r}: {exc.strerror}") from None
        where, owned = repr(args.file), True
    conn = connect(resolve_dsn(dsn_of(args)))
    try:
        # One transaction: a line that is not UTF-8 leaves the table as it was.
        count = load_lines(conn, args.table, utf8_lines(stream, where), text_column=args.text_column)
    finally:
        conn.close()
        if owned:
            stream.close()
    print(f"loaded {count} rows into {args.table}")
    return 0
