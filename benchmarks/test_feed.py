"""The path around the model, as a pytest-benchmark group (``benchmarks/feed.py`` prints the same
comparison as one table with ratios):

    pytest benchmarks/test_feed.py --benchmark-only

A model whose forward costs almost nothing, so that what is measured is
everything around it: embedlib end to end against that model's
``SentenceTransformer.encode``, its tokenizer alone and a raw binary COPY of
the same rows. ``rows_per_s`` is in each result's extra info.
"""

from __future__ import annotations

import pytest

from benchmarks import feed, models, workloads
from benchmarks.measure import Database


@pytest.fixture(scope="module")
def contenders(dsn):  # type: ignore[no-untyped-def]
    texts = workloads.numbered(feed.ROWS)
    database = Database(dsn)
    table = database.load(texts)
    yield feed.contenders(database, table, texts, models.tiny())
    database.close()


@pytest.mark.benchmark(group=f"the path around the model, {feed.ROWS:,} rows, a 1-layer 32-wide BERT")
@pytest.mark.parametrize("name", [feed.ENCODE, feed.TOKENIZER, feed.RUST_TOKENIZER, feed.RAW_COPY, feed.EMBEDLIB])
def test_feed(benchmark, contenders, name):  # type: ignore[no-untyped-def]
    benchmark.pedantic(contenders[name], rounds=3, iterations=1)
    benchmark.extra_info["rows"] = feed.ROWS
    benchmark.extra_info["rows_per_s"] = feed.ROWS / benchmark.stats.stats.min
