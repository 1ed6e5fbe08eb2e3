"""``embedlib demo``: the bundled sample loaded, embedded and searched."""

from __future__ import annotations

import argparse

from embedlib.cli.arguments import Parents, dsn_of
from embedlib.config import env_workers


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    demo = commands.add_parser(
        "demo", parents=[parents.database, parents.running], help="load the bundled sample, embed it, search it"
    )
    demo.add_argument("--query", default="compress files into an archive", help="query for the search example")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedlib.demo import run_demo

    return run_demo(
        dsn=dsn_of(args),
        model=args.model,
        executor=args.executor,
        workers=args.workers if args.workers is not None else env_workers(),
        query=args.query,
        progress=not args.quiet and not args.json,
        as_json=args.json,
    )
