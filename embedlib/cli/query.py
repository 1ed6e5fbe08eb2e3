"""``embedlib index`` and ``embedlib search``: the stored vectors, indexed and searched."""

from __future__ import annotations

import argparse

from embedlib.cli.arguments import Parents, add_option, ingestor_of, positive_int
from embedlib.options import INDEX_METHODS


def add_parsers(commands: argparse._SubParsersAction, parents: Parents) -> None:
    index = commands.add_parser(
        "index",
        parents=[parents.database, parents.source, parents.target],
        help="build a pgvector index on a table's stored vectors",
    )
    index.add_argument("--method", choices=INDEX_METHODS, default="hnsw", help="(default: %(default)s)")
    add_option(index, "metric")
    index.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    index.set_defaults(handler=run_index)

    search = commands.add_parser(
        "search",
        parents=[parents.database, parents.source, parents.target],
        help="the rows nearest to a query, by their stored vectors",
    )
    search.add_argument("query", help="text to search for")
    search.add_argument("-k", type=positive_int, default=10, help="how many rows (default: %(default)s)")
    add_option(search, "model", help="the model that made the vectors (default: %(default)s)")
    add_option(search, "metric", help="(default: %(default)s)")
    search.add_argument("--json", action="store_true", help="print the matches as JSON lines")
    search.set_defaults(handler=run_search)


def run_index(args: argparse.Namespace) -> int:
    built = ingestor_of(args, progress=not args.quiet).build_index(args.method, args.metric)
    what = f"{built.method} index {built.name} ({built.metric})"
    if built.created:
        print(f"built {what}: {built.rows} rows in {built.seconds:.1f} s")
    else:
        print(f"{what} exists already")
    return 0


def run_search(args: argparse.Namespace) -> int:
    import json
    import math

    for match in ingestor_of(args, model=args.model).search(args.query, args.k, metric=args.metric):
        if args.json:
            # NaN (a stored vector with no direction, from before such vectors were refused) is null:
            # JSON has no NaN.
            distance = match.distance if math.isfinite(match.distance) else None
            found = {"id": match.id, "text": match.text, "distance": distance}
            if match.chunk is not None:  # a chunked target: where in the text the best chunk is
                found.update(chunk=match.chunk, start=match.start, end=match.end, snippet=match.snippet)
            print(json.dumps(found, default=str))
        else:  # the chunk that matched, on a chunked target: a long text whole is no answer to read
            print(f"{match.distance:.4f}  {match.id}  {' '.join(match.snippet.split())}")
    return 0
