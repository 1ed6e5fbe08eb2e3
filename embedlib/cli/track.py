"""``embedlib track`` and ``embedlib untrack``: capture a table's changes, or stop."""

from __future__ import annotations

import argparse

from embedlib.cli.arguments import Parents, add_option, ingestor_of


def add_parsers(commands: argparse._SubParsersAction, parents: Parents) -> None:
    track = commands.add_parser(
        "track",
        parents=[parents.database, parents.source, parents.target],
        help="capture the table's inserts, updates and deletes, so that runs embed what changed without "
        "reading the whole table (needs TRIGGER on it and CREATE on the target's schema)",
    )
    add_option(track, "model", help="the model whose runs read the changes (default: %(default)s)")
    add_option(track, "dtype")
    add_option(track, "chunk_tokens")  # track makes the target if there is none: as ingest would
    add_option(track, "chunk_overlap")
    track.set_defaults(handler=run_track)
    untrack = commands.add_parser(
        "untrack",
        parents=[parents.database, parents.source, parents.target],
        help="stop capturing the table's changes: drop its triggers and queue; runs read the whole table again",
    )
    untrack.set_defaults(handler=run_untrack)


def run_track(args: argparse.Namespace) -> int:
    newly = ingestor_of(
        args, model=args.model, dtype=args.dtype, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap
    ).track()
    if newly:
        print(f"tracking {args.table}: the next run reads the whole table once, then only what changed")
    else:
        print(f"{args.table} is tracked already")
    return 0


def run_untrack(args: argparse.Namespace) -> int:
    was = ingestor_of(args).untrack()
    print(f"{args.table} is no longer tracked" if was else f"{args.table} was not tracked")
    return 0
