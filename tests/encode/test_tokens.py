"""Tokenize once: the ids the planner counts are the ids the model runs on, cut to its window as the
model's own tokenizer cuts them, and a run never tokenizes a text a second time."""

from __future__ import annotations

import numpy as np
import pytest

from embedlib import Ingestor
from embedlib.encode.base import resolve_encoder
from embedlib.encode.packing import preprocessor
from embedlib.encode.tokens import TokenIds

pytestmark = pytest.mark.model

TEXTS = ["a", "  Leading and trailing spaces  ", "UPPER case, Ünïcode, 中文 and emoji 🚀", "long " * 400, "two words"]


def token_ids(rows: list[list[int]], counts: list[int] | None = None) -> TokenIds:
    offsets = np.cumsum([0, *map(len, rows)])
    ids = np.array([i for row in rows for i in row], dtype=np.int32)
    return TokenIds(ids, offsets, np.array(counts or list(map(len, rows)), dtype=np.int64))


def test_token_ids_are_chosen_sliced_and_padded_as_lists_would_be():
    rows = [[101, 7, 102], [101, 102], [101, 5, 6, 7, 8, 102], [101, 9, 102]]
    tokens = token_ids(rows, counts=[3, 2, 40, 3])
    taken = tokens.take([2, 0, 2])
    assert [taken.ids[a:b].tolist() for a, b in zip(taken.offsets[:-1], taken.offsets[1:], strict=True)] == [
        rows[2],
        rows[0],
        rows[2],
    ]
    assert taken.counts.tolist() == [40, 3, 40]  # counts before the cut travel with their ids
    part = tokens.slice(1, 3)
    assert (part.lengths.tolist(), part.counts.tolist()) == ([2, 6], [2, 40])
    ids, mask = tokens.padded(pad_id=0)
    assert ids.tolist() == [row + [0] * (6 - len(row)) for row in rows]
    assert mask.tolist() == [[1] * len(row) + [0] * (6 - len(row)) for row in rows]
    assert len(tokens.take([])) == 0 and tokens.take([]).padded(0)[0].shape == (0, 0)


def test_the_fast_tokenizer_gives_the_models_own_features_and_counts_before_the_cut():
    encoder = resolve_encoder("all-MiniLM-L6-v2")
    assert encoder.tokenize is not None  # the default model is one it reproduces
    tokens = encoder.tokenize(TEXTS)
    expected = preprocessor(encoder._model)(TEXTS)
    features = encoder._features(tokens)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert features[key].tolist() == expected[key].tolist(), key
    assert tokens.counts[3] == 402 and tokens.lengths[3] == encoder.max_tokens  # counted whole, cut to the window
    assert tokens.counts.tolist() == encoder.count_tokens(TEXTS)
    vectors = encoder.encode_tokens(tokens)
    assert np.abs(vectors - encoder._forward(expected)).max() < 1e-5


def test_a_run_tokenizes_each_distinct_text_once_and_never_through_preprocess(dsn, tables, sample_texts, monkeypatch):
    encoder = resolve_encoder("all-MiniLM-L6-v2")
    texts = [*sample_texts[:40], *sample_texts[:10]]  # ten texts twice
    table = tables.source(texts)
    tokenized: list[str] = []
    real = encoder.tokenize
    assert real is not None

    class Counting:
        def __call__(self, batch):  # type: ignore[no-untyped-def]
            tokenized.extend(batch)
            return real(batch)

        def count(self, batch):  # type: ignore[no-untyped-def]
            raise AssertionError("counted apart from the ids the model runs on")

    def second_tokenization(*args: object, **kwargs: object) -> None:
        raise AssertionError("a text was tokenized again for the model")

    monkeypatch.setattr(encoder, "tokenize", Counting())
    monkeypatch.setattr(encoder._model, "preprocess", second_tokenization, raising=False)
    monkeypatch.setattr(encoder._model, "tokenize", second_tokenization, raising=False)
    report = Ingestor(dsn, table=table, batch_size=8).run()
    assert (report.rows, report.encoded) == (50, 40)
    assert sorted(tokenized) == sorted(set(texts))
