"""What chunking costs beside the model: ``python -m benchmarks.chunking [--documents N] [--rounds N]``.

The same chunk texts, embedded two ways with the real model in one run: as
the chunks of long documents (pydoc module documentation, see
``benchmarks.retrieval``) on a chunked target, and as rows of their own on a
plain one. The model does the same work both ways; what differs is what
chunking adds (counting the documents' tokens, cutting them, one row per
chunk). Tokens per second of each, best of ``--rounds``, and the median of
the rounds' ratios: each round runs both, in turns first, since this
machine's speed drifts by tens of percent within minutes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.measure import Database, warm_model
from benchmarks.retrieval import long_documents
from embedlib import Ingestor
from embedlib.encode.base import resolve_encoder
from embedlib.plan.chunking import chunk_text

CHUNK_TOKENS = 256


def timed(db: Database, table: str, **options: object) -> float:
    db.drop(f"{table}_embeddings")
    started = time.perf_counter()
    Ingestor(db.dsn, table=table, **options).run()  # type: ignore[arg-type]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    warm_model()
    count = resolve_encoder("all-MiniLM-L6-v2").count_tokens  # type: ignore[attr-defined]
    documents = long_documents(args.documents)
    pieces = [c.text for d in documents for c in chunk_text(d, count, CHUNK_TOKENS)]
    tokens = sum(count(pieces))
    db = Database()
    try:
        whole, apart = db.load(documents), db.load(pieces)
        chunked: list[float] = []
        plain: list[float] = []
        for round_ in range(args.rounds):
            runs = [(chunked, whole, {"chunk_tokens": CHUNK_TOKENS}), (plain, apart, {})]
            for times, table, options in runs if round_ % 2 == 0 else runs[::-1]:
                times.append(timed(db, table, batch_size=32, **options))
    finally:
        db.close()
    print(f"{len(documents)} documents, {len(pieces)} chunks, {tokens:,} tokens")
    print("| run | tokens/s |\n|---|---:|")
    print(f"| chunks of the documents (chunked target) | {tokens / min(chunked):,.0f} |")
    print(f"| the same texts as rows (plain target) | {tokens / min(plain):,.0f} |")
    ratios = [p / c for p, c in zip(plain, chunked, strict=True)]
    print(f"chunked / plain tokens/s, median of {len(ratios)} rounds: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
