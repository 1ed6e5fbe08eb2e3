"""``embedlib ingest``: embed the rows of a table that need it."""

from __future__ import annotations

import argparse
import os

from embedlib.cli.arguments import Parents, int_at_least, positive_int, seconds
from embedlib.cli.signals import SIGNALS
from embedlib.db.session import DEFAULT_RECONNECT_S
from embedlib.errors import ConfigError
from embedlib.options import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ATTEMPTS, DTYPES
from embedlib.query.index import METHODS, METRICS

DEFAULT_BATCH_SIZE = 100


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    ingest = commands.add_parser(
        "ingest",
        parents=[parents.database, parents.running, parents.source, parents.target],
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
        type=lambda text: int_at_least(text, 0),
        default=DEFAULT_BATCH_TOKENS,
        help="cap each call to the model at this many tokens (texts x longest; default: %(default)s, 0: no cap)",
    )
    ingest.add_argument(
        "--reconnect-timeout",
        type=seconds,
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
    ingest.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedlib.run.ingestor import Ingestor

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
    with SIGNALS.stopping_gracefully(ingestor.stop):
        report = ingestor.run(limit=args.limit)
    print(report.to_json() if args.json else report.summary())
    return 128 + SIGNALS.received[0] if SIGNALS.received else 0
