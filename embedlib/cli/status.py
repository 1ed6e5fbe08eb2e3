"""``embedlib status``: where a table stands, without changing anything."""

from __future__ import annotations

import argparse
import json

from embedlib.cli.arguments import Parents, add_option, dsn_of


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    status = commands.add_parser(
        "status",
        parents=[parents.database, parents.source, parents.target],
        help="rows embedded, pending, given up and deleted; runs working on the table now",
    )
    add_option(status, "model", help="the model whose vectors to count (default: %(default)s)")
    add_option(status, "max_attempts")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    status.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedlib.db.session import connect, resolve_dsn
    from embedlib.query.status import status
    from embedlib.source.tables import inspect_source

    conn = connect(resolve_dsn(dsn_of(args)), autocommit=True)
    try:
        source = inspect_source(conn, args.table, args.id_column, args.text_column, args.text_template)
        found = status(conn, source, args.target, args.model, args.max_attempts)
    finally:
        conn.close()
    print(json.dumps(found.as_dict()) if args.json else found.summary())
    return 0
