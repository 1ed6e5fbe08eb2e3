"""Search over long documents, with chunks and without: ``python -m benchmarks.retrieval [--documents N]``.

The documents are real: the standard library's module documentation as
``pydoc`` renders it, the first ~14,000 characters of each (about 3,000
tokens), among the 2,000 short sentences of the bundled sample. Each query
is a sentence of a document taken from past the first 256 tokens, which a
model reading 256 tokens never sees in the document's single vector, and
which appears in no other document. A query scores when its document comes
first (top 1) or among the first five (top 5).
"""

from __future__ import annotations

import argparse
import importlib
import pydoc
import re
import uuid
from collections.abc import Sequence
from typing import Any

from benchmarks.measure import Database
from embedlib import Ingestor
from embedlib.plan.chunking import TokenCounter
from embedlib.source.loader import sample_lines

# Modules whose rendered documentation runs past 14,000 characters, in a fixed order.
MODULES = [
    "json",
    "re",
    "argparse",
    "pathlib",
    "logging",
    "collections",
    "unittest",
    "csv",
    "shutil",
    "subprocess",
    "datetime",
    "decimal",
    "itertools",
    "statistics",
    "random",
    "sqlite3",
    "tarfile",
    "zipfile",
    "threading",
    "queue",
    "socket",
    "selectors",
    "asyncio",
    "http.client",
    "urllib.parse",
    "difflib",
    "enum",
    "typing",
    "inspect",
    "pickle",
]
DOCUMENT_CHARS = 14_000
WINDOW = 256  # all-MiniLM-L6-v2's
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def long_documents(count: int) -> list[str]:
    """``count`` module documentations, each cut to its first DOCUMENT_CHARS characters."""
    texts = []
    for name in MODULES[:count]:
        text = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)
        texts.append(text[:DOCUMENT_CHARS])
    return texts


def queries(documents: Sequence[str], count_tokens: TokenCounter, per_document: int = 2) -> list[tuple[int, str]]:
    """(document index, sentence): sentences of 8 to 40 words past each document's first WINDOW
    tokens, found in no other document."""
    flat = [" ".join(text.split()) for text in documents]
    chosen = []
    for index, text in enumerate(flat):
        cut = _window_end(text, count_tokens)
        candidates = [
            s
            for s in _SENTENCE.split(text[cut:])
            if 8 <= len(s.split()) <= 40
            and sum(c.isalpha() for c in s) > 0.7 * len(s.replace(" ", ""))
            and not any(s in other for j, other in enumerate(flat) if j != index)
        ]
        step = max(1, len(candidates) // per_document)
        chosen.extend((index, s) for s in candidates[::step][:per_document])
    return chosen


def _window_end(text: str, count_tokens: TokenCounter) -> int:
    """The character offset where the model's window ends in ``text`` (binary search)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens([text[:middle]])[0] <= WINDOW:
            low = middle
        else:
            high = middle - 1
    return low


def evaluate(
    dsn: str, table: str, asked: list[tuple[int, str]], target: str | None = None, **options: Any
) -> tuple[float, float]:
    """Embed ``table`` into ``target`` (a new one by default) with ``options``; the share of
    ``asked`` whose document (id = index + 1) comes first, and among the first five."""
    target = target or f"{table}_{uuid.uuid4().hex[:6]}"
    ingestor = Ingestor(dsn, table=table, target=target, **options)
    ingestor.run()
    first = five = 0
    for index, query in asked:
        found = [match.id for match in ingestor.search(query, k=5)]
        first += bool(found) and found[0] == index + 1
        five += index + 1 in found
    return first / len(asked), five / len(asked)


def load_corpus(db: Database, documents: list[str], distractors: int) -> str:
    """The documents (ids 1..n) and ``distractors`` sample sentences after them, as one table."""
    return db.load([*documents, *sample_lines()[:distractors]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=len(MODULES))
    parser.add_argument("--distractors", type=int, default=2000)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    args = parser.parse_args()
    from embedlib.encode.base import resolve_encoder

    count_tokens = resolve_encoder("all-MiniLM-L6-v2").count_tokens  # type: ignore[attr-defined]
    documents = long_documents(args.documents)
    asked = queries(documents, count_tokens)
    db = Database()
    try:
        table = load_corpus(db, documents, args.distractors)
        print(f"{len(documents)} documents, {args.distractors} distractors, {len(asked)} queries")
        print("| target | top 1 | top 5 |\n|---|---:|---:|")
        for label, options in (
            ("one vector per row", {}),
            (f"chunks of {args.chunk_tokens}", {"chunk_tokens": args.chunk_tokens}),
        ):
            top1, top5 = evaluate(db.dsn, table, asked, **options)
            print(f"| {label} | {top1:.0%} | {top5:.0%} |", flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    main()
