"""Whether a target holds one vector per row or one per chunk of its text, and how it cuts them.

A target is chunked or not from its creation, as it stores float or half
vectors: its ``meta`` table records the chunking (``chunking``: tokens and
overlap), and a run asking for another is refused, since the target's
chunks would then be cut two ways.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg2 import sql

from embedlib.db.relations import TargetTable
from embedlib.db.session import Connection, fetch_all
from embedlib.encode.base import Encoder
from embedlib.errors import ConfigError


@dataclass(frozen=True)
class Chunking:
    tokens: int  # at most this many tokens a chunk, as the model's tokenizer counts them
    overlap: int = 0  # tokens of the chunk before that each chunk begins with

    def describe(self) -> str:
        return f"--chunk-tokens {self.tokens}" + (f" --chunk-overlap {self.overlap}" if self.overlap else "")


def chunking_of(conn: Connection, target: TargetTable | None, tokens: int | None, overlap: int) -> Chunking | None:
    """How runs cut texts for ``target`` (None: a target still to be made) given ``--chunk-tokens``
    (None: as the target does) and ``--chunk-overlap``; refused if the target does otherwise."""
    if tokens is None and overlap:
        raise ConfigError("--chunk-overlap goes with --chunk-tokens: give both", option="chunk_overlap")
    if tokens is not None and overlap >= tokens:
        raise ConfigError(
            f"--chunk-overlap {overlap} must be less than --chunk-tokens {tokens}", option="chunk_overlap"
        )
    asked = Chunking(tokens, overlap) if tokens is not None else None
    if target is None:
        return asked
    if not target.chunked:
        if asked is not None:
            raise ConfigError(
                f"target {target.label!r} holds one vector per row (made without --chunk-tokens); "
                "choose another --target for chunks",
                option="chunk_tokens",
            )
        return None
    query = sql.SQL("SELECT value FROM {} WHERE key = 'chunking'").format(target.meta.ident)
    rows = fetch_all(conn, query) if target.meta.exists(conn) else []
    if not rows:  # made by a run that stopped before it recorded how: take what is asked
        if asked is None:
            raise ConfigError(
                f"target {target.label!r} holds chunks but does not say how they were cut: give --chunk-tokens",
                option="chunk_tokens",
            )
        return asked
    recorded = Chunking(**json.loads(rows[0][0]))
    if asked is not None and asked != recorded:
        raise ConfigError(
            f"target {target.label!r} holds chunks cut with {recorded.describe()}, not {asked.describe()}; "
            "give the same, or choose another --target",
            option="chunk_tokens",
        )
    return recorded


def check_chunking(encoder: Encoder, chunking: Chunking) -> None:
    """Refuse chunks the model could not read whole, or could not count the tokens of."""
    if getattr(encoder, "count_tokens", None) is None:
        raise ConfigError(
            f"--chunk-tokens needs a model whose tokenizer embedlib can use to count; {encoder.name!r} has none",
            option="chunk_tokens",
        )
    window = getattr(encoder, "max_tokens", None)
    if window and chunking.tokens > window:
        raise ConfigError(
            f"--chunk-tokens {chunking.tokens} is more than {encoder.name!r} reads ({window} tokens): "
            "chunks that long would be cut",
            option="chunk_tokens",
        )


def record_chunking(conn: Connection, target: TargetTable, chunking: Chunking) -> None:
    """Note how ``target`` cuts texts, in the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (key, value) VALUES ('chunking', %s) ON CONFLICT (key) DO NOTHING").format(
                target.meta.ident
            ),
            (json.dumps({"tokens": chunking.tokens, "overlap": chunking.overlap}),),
        )
