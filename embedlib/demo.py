"""``embedlib demo``: the main job end to end on bundled real text.

Loads 2,000 Debian package descriptions (bundled with embedlib) into the
table ``embedlib_demo`` the first time, embeds every row that needs it,
prints the report, and shows the nearest neighbours of a query. Run it twice:
the second run encodes nothing.
"""

from __future__ import annotations

import json
from importlib import resources

from embedlib.db import connect, resolve_dsn
from embedlib.ingestor import Ingestor
from embedlib.loader import load_lines
from embedlib.schema import existing_target, find_relation, inspect_source
from embedlib.search import nearest

DEMO_TABLE = "embedlib_demo"


def sample_lines() -> list[str]:
    """The bundled sample: real English sentences, one per line."""
    return resources.files("embedlib").joinpath("data/sample_sentences.txt").read_text("utf-8").splitlines()


def run_demo(
    *, dsn: str | None, model: str, executor: str, workers: int | None, query: str, progress: bool, as_json: bool
) -> int:
    dsn = resolve_dsn(dsn)
    conn = connect(dsn)
    try:
        if find_relation(conn, DEMO_TABLE) is None:
            loaded = load_lines(conn, DEMO_TABLE, sample_lines())
            if not as_json:
                print(f"loaded {loaded} sample sentences into {DEMO_TABLE}")
        report = Ingestor(
            dsn, table=DEMO_TABLE, model=model, executor=executor, workers=workers, progress=progress
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
