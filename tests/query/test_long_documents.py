"""Search over real long documents (the standard library's pydoc pages) with the real model: with
chunks, a sentence from past the model's window finds its document; without, mostly not."""

from __future__ import annotations

import pytest

from benchmarks.retrieval import evaluate, long_documents, queries
from embedlib.encode.base import resolve_encoder
from embedlib.source.loader import sample_lines


@pytest.mark.model
def test_chunks_find_what_is_said_past_the_models_window(dsn, tables):
    documents = long_documents(12)  # about 3,000 tokens each
    asked = queries(documents, resolve_encoder("all-MiniLM-L6-v2").count_tokens)  # type: ignore[attr-defined]
    assert len(asked) >= 20
    table = tables.source([*documents, *sample_lines()[:300]])  # ids 1..12 are the documents
    for target in (f"{table}_plain", f"{table}_chunks"):
        tables.created += [target, *(f"{target}_{kind}" for kind in ("errors", "leases", "claims", "meta"))]
    plain_first, _ = evaluate(dsn, table, asked, target=f"{table}_plain")
    first, five = evaluate(dsn, table, asked, target=f"{table}_chunks", chunk_tokens=256)
    print(f"\ntop 1 without chunks {plain_first:.0%}; with chunks: top 1 {first:.0%}, top 5 {five:.0%}")
    assert first >= 0.85 and five >= 0.95
    assert plain_first <= first - 0.2  # the contrast: one vector per document misses most of them
