"""Text in and out of the command, whatever the locale.

Input is UTF-8 whatever the locale: ``load`` reads its file or
standard input as bytes and decodes each line strictly, and arguments
(table names, queries) are taken back to their bytes and decoded as UTF-8.
Results on stdout are written as UTF-8 whatever the locale too (see
``_configure_output``), and ``search ... | head`` ends quietly with status
141, as Unix tools do when their reader goes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import sys
from collections.abc import Iterable, Iterator

from embedlib.errors import ConfigError

EXIT_SIGPIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE

_LONE_CR = re.compile(rb"\r(?!\n)")

_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_lines(stream: Iterable[bytes], where: str) -> Iterator[str]:
    """The lines of a byte stream, decoded as UTF-8 strictly, whatever the locale says.

    A line that is not UTF-8 is a ConfigError naming ``where`` and the line.
    Lines end where text mode would end them (universal newlines: ``\\n``,
    ``\\r\\n`` or a lone ``\\r``; a byte that is never inside a UTF-8 character),
    so line numbers are an editor's; a UTF-8 byte order mark opening the
    first line is not text. Decoding bytes here, not through ``sys.stdin``,
    is what makes the locale irrelevant: Python decodes standard input with
    the locale's encoding, ASCII under ``LC_ALL=C`` without UTF-8 mode, and
    with ``surrogateescape``, which turns bad bytes into characters that
    fail far from here.
    """
    number = 0
    lines = iter(stream)
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
        pieces = _LONE_CR.split(raw) if b"\r" in raw else [raw]
        if len(pieces) > 1 and not pieces[-1]:
            pieces.pop()  # the lone \r ended the last line
        for piece in pieces:
            number += 1
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = piece[exc.start : exc.end]
                raise ConfigError(
                    f"{where} is not UTF-8 text: line {number} has {bad!r} at byte {exc.start + 1}, "
                    "which is not UTF-8; convert it first (iconv -f ENCODING -t UTF-8)"
                ) from None
            yield text[1:] if number == 1 and text.startswith("\ufeff") else text


def configure_output() -> None:
    """Results on stdout are data: UTF-8 whatever the locale, the encoding ``load`` reads and
    PostgreSQL stores, so that they go byte for byte to a file, a pipe or ``embedlib load``; under
    an ASCII locale Python's default would crash on the first "é" (UnicodeEncodeError), and
    escaping would change the data. Messages on stderr are for a person: in the locale's
    encoding, with backslash escapes for what it cannot show ('tabl\\xe9'), never a crash."""
    for stream, options in ((sys.stdout, {"encoding": "utf-8"}), (sys.stderr, {})):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace", **options)


def arguments_as_utf8(args: argparse.Namespace) -> None:
    """Arguments as the UTF-8 text they are, whatever the locale.

    Python decodes arguments with the locale's encoding, and what it cannot
    decode (any non-ASCII byte under an ASCII locale) becomes surrogates
    that fail later, far from here. Such an argument is taken back to its
    bytes and decoded as UTF-8; one that is not UTF-8 is refused in one
    line. The file of ``load`` is a path and stays as given: the system
    takes it back as it came.
    """
    for name, value in vars(args).items():
        if name == "file" or not isinstance(value, str) or not _SURROGATE.search(value):
            continue
        raw = os.fsencode(value)
        try:
            setattr(args, name, raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"the {name.replace('_', ' ')} given, {raw!r}, is not UTF-8 text") from None


def stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (its write end polls as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are reported whatever the mask
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no stdout: take it for the pipe
        return True


def flush_stdout() -> None:
    """Flush stdout now; if its reader has gone (``--help | head -1``), quietly (see ``detach_stdout``)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        detach_stdout()
    except (OSError, ValueError, AttributeError):
        pass


def detach_stdout() -> None:
    """Point stdout at /dev/null, so that what is left in its buffer does not fail again at exit
    (Python would print "Exception ignored ... BrokenPipeError" and exit 120)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
