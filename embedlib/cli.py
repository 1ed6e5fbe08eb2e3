"""The ``embedlib`` command: ingest, load, demo.

Every failure a user can cause ends in one line on stderr and exit status 2.

Signals. The first Ctrl-C (or SIGTERM) during an ingest lets the batches
under way commit, prints the report and exits 130 (143). A second one, or
the first anywhere else, stops at once: "embedlib: interrupted" on stderr,
exit 130 for SIGINT, 143 for SIGTERM, and nothing more, whatever the
interruption breaks on its way out. An interruption can land anywhere, in
the middle of importing torch too, and leave a half-imported module whose
next import fails (an ImportError that once came out as "internal error"):
so after that line stderr goes to /dev/null, the stack unwinds (batches
under way roll back, connections close), exit handlers run (the embedded
server's stop), and the process ends with ``os._exit``, waiting for no
thread and leaving no say to interpreter shutdown. If unwinding takes more
than ``STOP_GRACE_S`` (a thread stuck in a model call), or a third signal
comes, the process ends there and then. A signal takes effect when the main
thread next runs Python code (a long C call, such as loading torch's
libraries, finishes first); two that arrive during one such call count as
two, not one as Python alone would have it. The handlers are installed
first thing in ``main`` and stay for the life of the process; a signal
before that (while Python imports embedlib, a fraction of a second) gets
Python's default.

Text. Input is UTF-8 whatever the locale: ``load`` reads its file or
standard input as bytes and decodes each line strictly, and arguments
(table names, queries) are taken back to their bytes and decoded as UTF-8.
Results on stdout are written as UTF-8 whatever the locale too (see
``_configure_output``), and ``search ... | head`` ends quietly with status
141, as Unix tools do when their reader goes.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

import psycopg2

from embedlib import redaction
from embedlib.config import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MODEL,
    env_dsn,
    env_workers,
    is_amount,
)
from embedlib.db import DEFAULT_RECONNECT_S
from embedlib.errors import ConfigError, EmbedlibError, one_line
from embedlib.executors import AUTO, EXECUTORS
from embedlib.index import METHODS, METRICS
from embedlib.schema import DTYPES

if TYPE_CHECKING:
    from embedlib.ingestor import Ingestor

DEFAULT_BATCH_SIZE = 100
STOP_GRACE_S = 5.0  # the most a stop at once waits for the stack to unwind and exit handlers to run
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        # redacted: a DSN typed where another argument goes is quoted back ("got 'postgresql://...'")
        self.exit(2, f"{self.prog}: error: {redaction.redact(message)} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _int_at_least(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {lowest}, got {value}")
    return value


def _seconds(text: str) -> float:
    return _amount(text, "seconds")


def _milliseconds(text: str) -> float:
    return _amount(text, "milliseconds")


def _amount(text: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
    if not is_amount(value):  # the check Settings makes: no NaN, no infinity
        raise argparse.ArgumentTypeError(f"expected a finite number of {unit} >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedlib", description="Turn PostgreSQL tables of text into pgvector embeddings.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    database = _Parser(add_help=False)
    database.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: $EMBEDLIB_DSN, $DATABASE_URL, else the embedded server)",
    )

    running = _Parser(add_help=False)
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
    source_options = _Parser(add_help=False)
    source_options.add_argument("table", help="source table (optionally schema.table)")
    source_options.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    source_options.add_argument("--id-column", default="id", help="unique id column (default: %(default)s)")
    target_option = _Parser(add_help=False)
    target_option.add_argument("--target", help="table for vectors and metrics (default: TABLE_embeddings)")

    ingest = commands.add_parser(
        "ingest",
        parents=[database, running, source_options, target_option],
        help="embed the rows of a table that need it",
    )
    ingest.add_argument(
        "batch_size",
        nargs="?",
        type=positive_int,
        help=f"texts per batch: one transaction, one or more encode calls ({DEFAULT_BATCH_SIZE})",
    )
    ingest.add_argument("--batch-size", dest="batch_size_option", type=positive_int, help="same as BATCH_SIZE")
    ingest.add_argument(
        "--batch-tokens",
        type=lambda text: _int_at_least(text, 0),
        default=DEFAULT_BATCH_TOKENS,
        help="cap each call to the model at this many tokens (texts x longest; default: %(default)s, 0: no cap)",
    )
    ingest.add_argument(
        "--reconnect-timeout",
        type=_seconds,
        default=DEFAULT_RECONNECT_S,
        metavar="SECONDS",
        help="how long to keep reconnecting when the database drops a connection (default: %(default)g)",
    )
    ingest.add_argument(
        "--max-attempts",
        type=positive_int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="runs that try a row the model fails on before leaving it out (default: %(default)s)",
    )
    ingest.add_argument(
        "--window-size",
        type=positive_int,
        help="source rows read, deduplicated and sorted at a time; also the span each run sharing "
        "the table leases (default: 10000, or 10 batches if larger)",
    )
    ingest.add_argument(
        "--autoscale",
        action="store_true",
        help="choose the number of workers while running, from the rows/s measured, up to --workers "
        "(default ceiling 16; threaded executor)",
    )
    ingest.add_argument(
        "--index",
        choices=METHODS,
        help="build this pgvector index on the vectors after the load (never before: it would slow the load)",
    )
    ingest.add_argument("--metric", choices=METRICS, default="cosine", help="the index's metric (default: %(default)s)")
    ingest.add_argument(
        "--dtype",
        choices=DTYPES,
        help="how a new target stores vectors: float (pgvector vector) or half (halfvec: half the space, "
        "recall cost in docs/performance.md); default: the existing target's type, else float",
    )
    ingest.add_argument("--limit", type=positive_int, help="process at most this many pending rows")
    ingest.add_argument("--metrics-only", action="store_true", help="recompute metrics of embedded rows, no encoding")
    ingest.set_defaults(handler=_ingest)

    bench = commands.add_parser(
        "bench",
        parents=[database, source_options],
        help="measure rows/s and speedup at 1, 2, 4, ... MAX_WORKERS workers on a table",
        description="Embed TABLE into a scratch target (dropped afterwards) at 1, 2, 4, ... MAX_WORKERS "
        "workers and print rows/s and speedup over 1 worker. A missing TABLE is created from the "
        "bundled sample sentences.",
    )
    bench.add_argument("batch_size", type=positive_int, help="texts per batch")
    bench.add_argument("max_workers", type=positive_int, help="the most workers to measure")
    bench.add_argument("--executor", choices=[AUTO, *EXECUTORS], default=AUTO, help="(default: %(default)s)")
    bench.add_argument(
        "--db-latency-ms",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="reach the database through a proxy adding MS to every round trip (and encode with a fast "
        "stand-in unless --model is given)",
    )
    bench.add_argument(
        "--encoder-latency-ms",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="encode through a local OpenAI-compatible service that takes MS per request",
    )
    bench.add_argument("--model", help=f"model name, path or service URL (default: {DEFAULT_MODEL})")
    bench.add_argument("--limit", type=positive_int, help="embed at most this many rows per run")
    bench.add_argument("--save", metavar="PATH", help="also save the figures and machine info as JSON to PATH")
    bench.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    bench.set_defaults(handler=_bench)

    index = commands.add_parser(
        "index",
        parents=[database, source_options, target_option],
        help="build a pgvector index on a table's stored vectors",
    )
    index.add_argument("--method", choices=METHODS, default="hnsw", help="(default: %(default)s)")
    index.add_argument("--metric", choices=METRICS, default="cosine", help="(default: %(default)s)")
    index.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    index.set_defaults(handler=_index)

    search = commands.add_parser(
        "search",
        parents=[database, source_options, target_option],
        help="the rows nearest to a query, by their stored vectors",
    )
    search.add_argument("query", help="text to search for")
    search.add_argument("-k", type=positive_int, default=10, help="how many rows (default: %(default)s)")
    search.add_argument("--model", default=DEFAULT_MODEL, help="the model that made the vectors (default: %(default)s)")
    search.add_argument("--metric", choices=METRICS, default="cosine", help="(default: %(default)s)")
    search.add_argument("--json", action="store_true", help="print the matches as JSON lines")
    search.set_defaults(handler=_search)

    load = commands.add_parser("load", parents=[database], help="load a text file, one text per line, into a table")
    load.add_argument("table", help="table to create or append to, with columns (id, text)")
    load.add_argument("file", help="UTF-8 text file, or - for standard input")
    load.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    load.set_defaults(handler=_load)

    demo = commands.add_parser("demo", parents=[database, running], help="load the bundled sample, embed it, search it")
    demo.add_argument("--query", default="compress files into an archive", help="query for the search example")
    demo.set_defaults(handler=_demo)
    return parser


def _ingest(args: argparse.Namespace) -> int:
    from embedlib.ingestor import Ingestor

    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address  # read by the ray executor, and by Ray itself

    if args.batch_size and args.batch_size_option and args.batch_size != args.batch_size_option:
        raise ConfigError("BATCH_SIZE and --batch-size disagree; give one")
    ingestor = Ingestor(
        args.dsn,
        table=args.table,
        text_column=args.text_column,
        id_column=args.id_column,
        target=args.target,
        model=args.model,
        batch_size=args.batch_size or args.batch_size_option or DEFAULT_BATCH_SIZE,
        executor=args.executor,
        workers=args.workers,
        batch_tokens=args.batch_tokens,
        metrics_only=args.metrics_only,
        dtype=args.dtype,
        window_size=args.window_size or 0,
        max_attempts=args.max_attempts,
        reconnect_s=args.reconnect_timeout,
        autoscale=args.autoscale,
        index=args.index,
        metric=args.metric,
        progress=not args.quiet and not args.json,
    )
    with _SIGNALS.stopping_gracefully(ingestor.stop):
        report = ingestor.run(limit=args.limit)
    print(report.to_json() if args.json else report.summary())
    return 128 + _SIGNALS.received[0] if _SIGNALS.received else 0


class _Signals:
    """What SIGINT and SIGTERM do while ``main`` runs (see the module docstring). One per process."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.stopping: int | None = None  # the signal that stopped the command at once
        self._graceful: Callable[[], None] | None = None
        self._pid = os.getpid()
        self._pipe: tuple[int, int] | None = None  # Python's wakeup fd: one byte per signal, none folded
        self._stopped_at_once = threading.Event()  # wakes the watchdog (see install)
        self._watchdog_thread: threading.Thread | None = None

    def install(self) -> None:
        self.received, self.stopping, self._graceful = [], None, None
        try:
            for signum in STOPPING_SIGNALS:
                signal.signal(signum, self._handle)
        except ValueError:  # main called from another thread: signals are not ours to handle
            return
        if self._watchdog_thread is None:
            # Started now, not by the handler: a handler that starts a thread while the main
            # thread is inside threading's own bookkeeping (starting an executor's) deadlocks.
            self._watchdog_thread = threading.Thread(target=self._watchdog, name="embedlib-stop", daemon=True)
            self._watchdog_thread.start()
        try:
            if self._pipe is None:
                read, write = os.pipe()
                self._pipe = read, write
                os.set_blocking(read, False)
                os.set_blocking(write, False)
            signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except (OSError, ValueError, AttributeError):  # no pipes as wakeup fds here (Windows): no counting
            self._pipe = None

    @contextlib.contextmanager
    def stopping_gracefully(self, stop: Callable[[], None]) -> Iterator[None]:
        """Within: the first signal calls ``stop`` (the run commits what is under way and reports)."""
        self._graceful = stop
        try:
            yield
        finally:
            self._graceful = None

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked child that kept the handler: what Python would do
            raise KeyboardInterrupt
        for arrived in self._arrivals(signum):
            self.received.append(arrived)
            if self.stopping is not None:  # a third: unwinding takes too long for the user
                os._exit(128 + self.stopping)
            if self._graceful is not None and len(self.received) == 1:
                _write_stderr("embedlib: stopping after the batches under way (press Ctrl-C again to stop now)")
                self._graceful()
            else:
                self._stop_now(arrived)

    def _arrivals(self, signum: int) -> list[int]:
        """The signals that arrived since the last call. Python runs a handler once for however many
        of one signal arrived while the main thread was in C code; the wakeup fd has a byte for each."""
        if self._pipe is None:
            return [signum]
        previous = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        if previous != self._pipe[1]:  # another wakeup fd was set since (an event loop's): no counting
            signal.set_wakeup_fd(previous)
            return [signum]
        try:
            data = os.read(self._pipe[0], 4096)
        except BlockingIOError:
            data = b""
        # Empty: this call's signal was read, and handled, by an earlier call.
        return [byte for byte in data if byte in STOPPING_SIGNALS]

    def _stop_now(self, signum: int) -> NoReturn:
        self.stopping = signum
        _write_stderr("embedlib: interrupted")
        if not os.environ.get("EMBEDLIB_DEBUG"):
            _silence_stderr()  # what the interruption breaks on its way out is not the user's concern
        self._stopped_at_once.set()
        raise KeyboardInterrupt  # unwind: batches under way roll back, connections close

    def _watchdog(self) -> None:
        """End the process ``STOP_GRACE_S`` after a stop at once, if it has not ended by then."""
        self._stopped_at_once.wait()
        time.sleep(STOP_GRACE_S)
        os._exit(128 + (self.stopping or signal.SIGINT))

    def finish(self) -> NoReturn:
        """End the process stopped at once: exit handlers (the embedded server's stop), then ``os._exit``."""
        assert self.stopping is not None
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        os._exit(128 + self.stopping)


_SIGNALS = _Signals()


def _write_stderr(line: str) -> None:
    """One line straight to fd 2: safe in a signal handler, where stderr's buffer may be mid-write."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode("ascii", "backslashreplace"))


def _silence_stderr() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _bench(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from embedlib import bench

    if args.encoder_latency_ms and args.model:
        raise ConfigError("--encoder-latency-ms encodes through a local stand-in service; drop --model")
    dsn = _dsn_of(args)
    loaded = bench.ensure_sample_table(dsn, args.table)
    if loaded and not args.json:
        print(f"table {args.table!r} did not exist: loaded {loaded} bundled sample sentences into it")
    regime = bench.Regime(db_latency_ms=args.db_latency_ms, encoder_latency_ms=args.encoder_latency_ms)
    shown: list[bench.Point] = []

    def show(point: bench.Point) -> None:
        shown.append(point)
        if args.json:
            return
        if len(shown) == 1:  # after the first run: a bad table or model fails in one line, before any output
            print(f"embedlib bench {args.table}: batch size {args.batch_size}, executor {point.executor}, "
                  f"regime {regime.name}")  # fmt: skip
            print(bench.speedup_lines([])[0])
        print(bench.speedup_lines(shown)[-1], flush=True)

    points = bench.sweep(
        dsn,
        bench.Source(args.table, args.text_column, args.id_column),
        regime=regime,
        batch_sizes=[args.batch_size],
        workers=bench.worker_counts(args.max_workers),
        executors=[args.executor],
        model=args.model,
        limit=args.limit,
        on_point=show,
    )
    machine = bench.machine_info(dsn) if args.json or args.save else {}
    if args.save:
        try:
            bench.save(args.save, points, machine)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # unwritable, or not a file of ours to merge into
            raise ConfigError(f"cannot save to {args.save!r}: {one_line(exc)}") from None
    if args.json:
        ratios = bench.speedups(points)
        rows = [{**dataclasses.asdict(p), "speedup": round(ratios.get(p, 0.0), 3)} for p in points]
        print(json.dumps({"machine": machine, "points": rows}))
    return 0


def _index(args: argparse.Namespace) -> int:
    built = _ingestor_of(args, progress=not args.quiet).build_index(args.method, args.metric)
    what = f"{built.method} index {built.name} ({built.metric})"
    if built.created:
        print(f"built {what}: {built.rows} rows in {built.seconds:.1f} s")
    else:
        print(f"{what} exists already")
    return 0


def _search(args: argparse.Namespace) -> int:
    import json
    import math

    for match in _ingestor_of(args, model=args.model).search(args.query, args.k, metric=args.metric):
        if args.json:
            # NaN (a stored vector with no direction, from before such vectors were refused) is null:
            # JSON has no NaN.
            distance = match.distance if math.isfinite(match.distance) else None
            print(json.dumps({"id": match.id, "text": match.text, "distance": distance}, default=str))
        else:
            print(f"{match.distance:.4f}  {match.id}  {' '.join(match.text.split())}")
    return 0


def _ingestor_of(args: argparse.Namespace, **options: Any) -> Ingestor:
    """An Ingestor for the table options shared by index and search."""
    from embedlib.ingestor import Ingestor

    return Ingestor(
        _dsn_of(args),
        table=args.table,
        text_column=args.text_column,
        id_column=args.id_column,
        target=args.target,
        **options,
    )


def _load(args: argparse.Namespace) -> int:
    from embedlib.db import connect, resolve_dsn
    from embedlib.loader import load_lines

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
    conn = connect(resolve_dsn(_dsn_of(args)))
    try:
        # One transaction: a line that is not UTF-8 leaves the table as it was.
        count = load_lines(conn, args.table, utf8_lines(stream, where), text_column=args.text_column)
    finally:
        conn.close()
        if owned:
            stream.close()
    print(f"loaded {count} rows into {args.table}")
    return 0


_LONE_CR = re.compile(rb"\r(?!\n)")


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


def _demo(args: argparse.Namespace) -> int:
    from embedlib.demo import run_demo

    return run_demo(
        dsn=_dsn_of(args),
        model=args.model,
        executor=args.executor,
        workers=args.workers if args.workers is not None else env_workers(),
        query=args.query,
        progress=not args.quiet and not args.json,
        as_json=args.json,
    )


def _dsn_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "dsn", None) or env_dsn()


def main(argv: Sequence[str] | None = None) -> int:
    _SIGNALS.install()
    try:
        status = _main(argv)
    except BaseException:
        if _SIGNALS.stopping is None or os.environ.get("EMBEDLIB_DEBUG"):
            raise
        status = 0
    if _SIGNALS.stopping is not None:
        _SIGNALS.finish()  # whatever the interruption caused, swallowed or raised
    return status


def _main(argv: Sequence[str] | None) -> int:
    _configure_output()
    # Warnings (a connection lost and made again, rows that failed) as lines like the errors', redacted.
    handler = logging.StreamHandler()
    handler.addFilter(redaction.RedactingFilter())
    logging.basicConfig(format="embedlib: warning: %(message)s", level=logging.WARNING, handlers=[handler])
    try:
        args = build_parser().parse_args(argv)
        _arguments_as_utf8(args)
        redaction.remember_dsn(getattr(args, "dsn", None))  # a --dsn password is never shown
        status = int(args.handler(args))
        sys.stdout.flush()  # here, not at exit, so that a reader gone (| head) is handled below
        return status
    except BaseException as exc:
        if _SIGNALS.stopping is not None:
            raise  # main ends a process stopped at once
        if isinstance(exc, SystemExit):  # argparse's --help or usage line, or an exit on purpose
            _flush_stdout()
            raise
        return _failure(exc)


def _failure(exc: BaseException) -> int:
    """The exit status for ``exc``, after one line on stderr (none when stdout's reader has gone)."""
    if isinstance(exc, BrokenPipeError) and _stdout_gone():
        _detach_stdout()
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


def _configure_output() -> None:
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


def _arguments_as_utf8(args: argparse.Namespace) -> None:
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (its write end polls as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are reported whatever the mask
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no stdout: take it for the pipe
        return True


def _flush_stdout() -> None:
    """Flush stdout now; if its reader has gone (``--help | head -1``), quietly (see ``_detach_stdout``)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _detach_stdout()
    except (OSError, ValueError, AttributeError):
        pass


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that what is left in its buffer does not fail again at exit
    (Python would print "Exception ignored ... BrokenPipeError" and exit 120)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
