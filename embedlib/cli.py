"""The ``embedlib`` command: ingest, load, demo.

Every failure a user can cause ends in one line on stderr and exit status 2.
The first Ctrl-C (or SIGTERM) during an ingest lets the batches under way
commit, prints the report and exits 130 (143); a second one stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg2

from embedlib.config import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MODEL, env_dsn, env_workers
from embedlib.db import DEFAULT_RECONNECT_S, one_line, redact
from embedlib.errors import ConfigError, EmbedlibError
from embedlib.executors import AUTO, EXECUTORS
from embedlib.index import METHODS, METRICS
from embedlib.schema import DTYPES

if TYPE_CHECKING:
    from embedlib.ingestor import Ingestor

DEFAULT_BATCH_SIZE = 100


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of {unit} >= 0, got {text!r}")
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
        "recall cost in the README); default: the existing target's type, else float",
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
    with _stop_on_signal(ingestor.stop) as received:
        report = ingestor.run(limit=args.limit)
    print(report.to_json() if args.json else report.summary())
    return 128 + received[0] if received else 0


@contextlib.contextmanager
def _stop_on_signal(stop: Callable[[], None]) -> Iterator[list[int]]:
    """The first Ctrl-C (or SIGTERM) calls ``stop``: the run commits what is under way and
    reports. A second one stops at once (batches under way roll back). Yields the signals received."""
    received: list[int] = []

    def handle(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        received.append(signum)
        print("embedlib: stopping after the batches under way (press Ctrl-C again to stop now)", file=sys.stderr)
        stop()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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

    for match in _ingestor_of(args, model=args.model).search(args.query, args.k, metric=args.metric):
        if args.json:
            print(json.dumps({"id": match.id, "text": match.text, "distance": match.distance}, default=str))
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

    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file!r}: {exc.strerror}") from None
    conn = connect(resolve_dsn(_dsn_of(args)))
    try:
        with stream:
            count = load_lines(conn, args.table, stream, text_column=args.text_column)
    except UnicodeDecodeError:
        raise ConfigError(f"{args.file!r} is not UTF-8 text") from None
    finally:
        conn.close()
    print(f"loaded {count} rows into {args.table}")
    return 0


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


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds like Ctrl-C: running batches finish or roll back,
    # connections close, and the embedded server's atexit hook stops it.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Warnings (a connection lost and made again, rows that failed) as lines like the errors'.
    logging.basicConfig(format="embedlib: warning: %(message)s", level=logging.WARNING)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return int(args.handler(args))
    except EmbedlibError as exc:
        print(f"embedlib: error: {redact(str(exc), _dsn_of(args))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("embedlib: interrupted", file=sys.stderr)
        return 130
    except psycopg2.Error as exc:
        # A database refusal we did not foresee (permissions, a full disk): still one line.
        print(f"embedlib: database error: {redact(one_line(exc), _dsn_of(args))}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("EMBEDLIB_DEBUG"):
            raise
        message = redact(f"{type(exc).__name__}: {one_line(exc)}", _dsn_of(args))
        print(f"embedlib: internal error: {message} (set EMBEDLIB_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
