"""``embedlib demo``: the main job end to end on bundled real text.

Loads 2,000 Debian package descriptions (bundled with embedlib) into the
table ``embedlib_demo`` the first time, embeds every row that needs it,
prints the report, and shows the nearest neighbours of a query. Run it twice:
the second run encodes nothing.
"""

from __future__ import annotations

import argparse
import json

from embedlib.cli.arguments import Parents, dsn_of

DEMO_TABLE = "embedlib_demo"


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    demo = commands.add_parser(
        "demo", parents=[parents.database, parents.running], help="load the bundled sample, embed it, search it"
    )
    demo.add_argument("--query", default="compress files into an archive", help="query for the search example")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(
        dsn=dsn_of(args),
        model=args.model,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        query=args.query,
        progress=not args.quiet and not args.json,
        as_json=args.json,
    )


def run_demo(
    *,
    dsn: str | None,
    model: str,
    executor: str,
    workers: int | None,
    ray_address: str | None,
    query: str,
    progress: bool,
    as_json: bool,
) -> int:
    from embedlib.db.relations import find_relation
    from embedlib.db.session import connect, resolve_dsn
    from embedlib.query.search import nearest
    from embedlib.run.ingestor import Ingestor
    from embedlib.source.loader import load_lines, sample_lines
    from embedlib.source.tables import inspect_source
    from embedlib.store.schema import existing_target

    dsn = resolve_dsn(dsn)
    conn = connect(dsn)
    try:
        if find_relation(conn, DEMO_TABLE) is None:
            loaded = load_lines(conn, DEMO_TABLE, sample_lines())
            if not as_json:
                print(f"loaded {loaded} sample sentences into {DEMO_TABLE}")
        report = Ingestor(
            dsn,
            table=DEMO_TABLE,
            model=model,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            progress=progress,
        ).run()
        source = inspect_source(conn, DEMO_TABLE, "id", "text")
        target = existing_target(conn, source, None)
        assert target is not None, "the ingest above creates the target"
        matches = nearest(conn, source, target, model, query, k=5)
    finally:
        conn.close()
    if as_json:
        print(json.dumps({"report": report.as_dict(), "query": query, "nearest": [m._asdict() for m in matches]}))
        return 0
    print(report.summary())
    print(f'\nnearest to "{query}":')
    for match in matches:
        print(f"  {match.distance:.3f}  {match.text}")
    return 0
