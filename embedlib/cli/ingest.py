"""``embedlib ingest``: embed the rows of a table that need it."""

from __future__ import annotations

import argparse

from embedlib.cli.arguments import Parents, add_option, positive_int
from embedlib.cli.signals import SIGNALS
from embedlib.cli.watching import Watching
from embedlib.errors import ConfigError
from embedlib.options import OPTIONS, default

# The settings ``embedlib ingest`` takes as flags of its own, beside the shared groups (see arguments.parents).
INGEST_FLAGS = (
    "batch_tokens",
    "device",
    "precision",
    "reconnect_s",
    "max_attempts",
    "window_size",
    "autoscale",
    "index",
    "metric",
    "dtype",
    "chunk_tokens",
    "chunk_overlap",
    "metrics_only",
    "poll_interval_s",
)
# Settings that come from the shared groups, under the same names.
SHARED = (
    "dsn",
    "table",
    "text_column",
    "text_template",
    "id_column",
    "target",
    "model",
    "executor",
    "workers",
    "ray_address",
)


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    ingest = commands.add_parser(
        "ingest",
        parents=[parents.database, parents.running, parents.source, parents.target],
        help="embed the rows of a table that need it",
    )
    batch_help = OPTIONS["batch_size"].help % {"default": default("batch_size")}  # the positional's default is None
    ingest.add_argument("batch_size", nargs="?", type=positive_int, help=batch_help)
    ingest.add_argument("--batch-size", dest="batch_size_option", type=positive_int, help="same as BATCH_SIZE")
    for name in INGEST_FLAGS:
        add_option(ingest, name, dest=name)
    ingest.add_argument("--limit", type=positive_int, help="process at most this many pending rows")
    ingest.add_argument(
        "--follow",
        action="store_true",
        help="after the pending rows, keep the table in step until Ctrl-C or SIGTERM, with the model loaded: "
        "woken by each change on a tracked table (embedlib track), else looking every --poll-interval seconds",
    )
    ingest.add_argument(
        "--metrics-port",
        type=positive_int,
        metavar="PORT",
        help="with --follow: serve Prometheus metrics on http://HOST:PORT/metrics",
    )
    ingest.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="with --metrics-port: the address to serve on (default: %(default)s; 0.0.0.0 for every interface)",
    )
    ingest.add_argument(
        "--debug",
        action="store_true",
        help="also show the round trips to the database: in all, setting up, reading and writing",
    )
    ingest.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedlib.run.ingestor import Ingestor

    if args.batch_size and args.batch_size_option and args.batch_size != args.batch_size_option:
        raise ConfigError("BATCH_SIZE and --batch-size disagree; give one")
    if args.follow and args.limit:
        raise ConfigError("--follow keeps every row in step; it takes no --limit")
    if args.metrics_port and not args.follow:
        raise ConfigError("--metrics-port is for a follower: add --follow")
    settings = {name: getattr(args, name) for name in (*SHARED, *INGEST_FLAGS)}
    ingestor = Ingestor(
        **settings,
        batch_size=args.batch_size or args.batch_size_option or default("batch_size"),
        progress=not args.quiet and not args.json,
    )
    with SIGNALS.stopping_gracefully(ingestor.stop):
        if args.follow:
            show = not args.quiet and not args.json
            watching = Watching(args.table, show=show, metrics_port=args.metrics_port, metrics_host=args.metrics_host)
            try:
                report = ingestor.follow(on_cycle=watching, every_cycle=True)
            finally:
                watching.close()
        else:
            report = ingestor.run(limit=args.limit)
    print(report.to_json() if args.json else report.summary(debug=args.debug))
    return 128 + SIGNALS.received[0] if SIGNALS.received else 0
