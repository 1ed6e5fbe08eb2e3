"""The ``embedlib`` command: ingest, load, demo.

Every failure a user can cause ends in one line on stderr and exit status 2.

Signals: see ``signals``; text in and out: see ``text``. One module per command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import psycopg2

from embedlib import redaction
from embedlib.cli import bench, demo, ingest, load, query, status, track
from embedlib.cli.arguments import Parser, parents
from embedlib.cli.signals import SIGNALS
from embedlib.cli.text import (
    EXIT_SIGPIPE,
    arguments_as_utf8,
    configure_output,
    detach_stdout,
    flush_stdout,
    stdout_gone,
)
from embedlib.errors import EmbedlibError, one_line

# The command owns its process, so it may set the interpreter's thread switch
# interval, which a library must leave to its caller. A writer thread that waited
# on the database (COPY, commit) needs the GIL back to go on; at Python's default
# 5 ms it waits that long behind a busy planner thread at every such step, a large
# share of a fast COPY's time (docs/performance.md). 0.5 ms hands it back at once.
SWITCH_INTERVAL_S = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="embedlib", description="Turn PostgreSQL tables of text into pgvector embeddings.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    shared = parents()
    ingest.add_parser(commands, shared)
    bench.add_parser(commands, shared)
    query.add_parsers(commands, shared)
    load.add_parser(commands, shared)
    demo.add_parser(commands, shared)
    status.add_parser(commands, shared)
    track.add_parsers(commands, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    SIGNALS.install()
    try:
        status = _main(argv)
    except BaseException:
        if SIGNALS.stopping is None or os.environ.get("EMBEDLIB_DEBUG"):
            raise
        status = 0
    if SIGNALS.stopping is not None:
        SIGNALS.finish()  # whatever the interruption caused, swallowed or raised
    return status


def _main(argv: Sequence[str] | None) -> int:
    configure_output()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Warnings (a connection lost and made again, rows that failed) as lines like the errors', redacted.
    handler = logging.StreamHandler()
    handler.addFilter(redaction.RedactingFilter())
    logging.basicConfig(format="embedlib: warning: %(message)s", level=logging.WARNING, handlers=[handler])
    try:
        args = build_parser().parse_args(argv)
        arguments_as_utf8(args)
        redaction.remember_dsn(getattr(args, "dsn", None))  # a --dsn password is never shown
        status = int(args.handler(args))
        sys.stdout.flush()  # here, not at exit, so that a reader gone (| head) is handled below
        return status
    except BaseException as exc:
        if SIGNALS.stopping is not None:
            raise  # main ends a process stopped at once
        if isinstance(exc, SystemExit):  # argparse's --help or usage line, or an exit on purpose
            flush_stdout()
            raise
        return _failure(exc)


def _failure(exc: BaseException) -> int:
    """The exit status for ``exc``, after one line on stderr (none when stdout's reader has gone)."""
    if isinstance(exc, BrokenPipeError) and stdout_gone():
        detach_stdout()
        return EXIT_SIGPIPE
    if isinstance(exc, KeyboardInterrupt):  # raised by something other than our handler
        _say("embedlib: interrupted")
        return 128 + signal.SIGINT
    if isinstance(exc, EmbedlibError):
        _say(f"embedlib: error: {redaction.redact(str(exc))}")
        return exc.exit_code
    if isinstance(exc, psycopg2.Error):
        # A database refusal we did not foresee (permissions, a full disk): still one line.
        _say(f"embedlib: database error: {redaction.redact(one_line(exc))}")
        return 2
    if not isinstance(exc, Exception) or os.environ.get("EMBEDLIB_DEBUG"):
        raise exc
    message = redaction.redact(f"{type(exc).__name__}: {one_line(exc)}")
    _say(f"embedlib: internal error: {message} (set EMBEDLIB_DEBUG=1 for a traceback)")
    return 1


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed or gone: nothing more to say
        print(line, file=sys.stderr, flush=True)
