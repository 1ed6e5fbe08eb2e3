"""Planning batches: folding duplicates, sorting by length, row and token budgets (no database)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedlib.db import copybin
from embedlib.plan.batching import (
    PendingRow,
    budget_slices,
    encode_cost,
    estimated_tokens,
    group_by_text,
    make_batches,
)


def rows_of(texts: list[str], stored: set[int] = frozenset()) -> list[PendingRow]:  # type: ignore[assignment]
    return [PendingRow(str(i), t, f"h{t}", i in stored) for i, t in enumerate(texts)]


def test_duplicates_fold_and_every_row_maps_to_its_text():
    texts = ["bb", "a", "bb", "ccc", "a", "bb"]
    batches = make_batches(group_by_text(rows_of(texts)), 10, frequencies={"hbb": 3, "ha": 2})
    assert len(batches) == 1
    batch = batches[0]
    assert batch.texts == ["a", "bb", "ccc"]  # distinct, shortest first
    assert sorted(batch.ids, key=int) == [str(i) for i in range(6)]
    assert [batch.texts[i] for i in batch.text_index] == [texts[int(row_id)] for row_id in batch.ids]
    assert batch.frequencies.tolist() == [2, 3, 1]  # from the map; absent means 1


def test_batches_hold_at_most_batch_size_texts_in_length_order():
    texts = [f"{'x' * n}" for n in (5, 1, 9, 3, 7, 2, 8)]
    batches = make_batches(group_by_text(rows_of(texts)), 3, frequencies={})
    assert [len(b.texts) for b in batches] == [3, 3, 1]
    lengths = [len(t) for b in batches for t in b.texts]
    assert lengths == sorted(lengths)


def test_batches_sort_by_token_count_where_counted():
    groups = group_by_text(rows_of(["aaaaaaaaaaaa", "b", "cccccc"]))
    for group, count in zip(groups, [3, 9, 5], strict=True):
        group.token_count = count
    batch = make_batches(groups, 10, frequencies={})[0]
    assert batch.texts == ["aaaaaaaaaaaa", "cccccc", "b"]  # 3, 5, 9 tokens: characters do not decide
    assert batch.token_counts is not None and batch.token_counts.tolist() == [3, 5, 9]
    # past the model's limit every text costs the same, so characters break the tie
    capped = make_batches(groups, 10, frequencies={}, max_tokens=4)[0]
    assert capped.texts == ["aaaaaaaaaaaa", "b", "cccccc"]  # 3, then 9 and 5 both cost 4


@pytest.mark.parametrize(
    ("costs", "budget", "expected"),
    [
        ([10, 10, 10, 10], 40, [4]),
        ([10, 10, 10, 10], 25, [2, 2]),
        ([5, 5, 5, 100, 100], 200, [3, 2]),  # a long text would pad the short ones: it starts a new call
        ([300, 5], 200, [1, 1]),  # over the budget alone: a call to itself
        ([], 100, []),
    ],
)
def test_budget_slices_keep_texts_times_longest_within_budget(costs, budget, expected):
    slices = budget_slices(costs, budget)
    assert [s.stop - s.start for s in slices] == expected
    assert sum(expected) == len(costs) and all(a.stop == b.start for a, b in itertools.pairwise(slices))
    for part in slices:
        assert len(costs[part]) == 1 or len(costs[part]) * max(costs[part]) <= budget


def test_encode_cost_caps_at_the_model_limit_and_estimates_without_a_count():
    assert encode_cost("x" * 4000, None, 256) == 256
    assert encode_cost("word", 7, None) == 7
    assert encode_cost("word word", None, None) == estimated_tokens("word word")


def test_new_rows_only_when_no_row_has_a_target_row():
    texts = ["a", "b", "a"]
    assert make_batches(group_by_text(rows_of(texts)), 10, frequencies={})[0].new_rows
    assert not make_batches(group_by_text(rows_of(texts, stored={2})), 10, frequencies={})[0].new_rows


@pytest.mark.parametrize(
    ("id_type", "values", "expected"),
    [
        ("bigint", ["1", "-5"], np.array([1, -5], dtype=">i8")),
        ("integer", ["7"], np.array([7], dtype=">i4")),
        ("smallint", ["3"], np.array([3], dtype=">i2")),
        ("uuid", ["00000000-0000-0000-0000-000000000001"], np.array([b"\0" * 15 + b"\1"], dtype="S16")),
        ("character varying(20)", ["é"], ["é".encode()]),
    ],
)
def test_id_columns_in_their_binary_format(id_type, values, expected):
    column = copybin.ids(values, id_type)
    if isinstance(expected, np.ndarray):
        assert isinstance(column, np.ndarray) and column.dtype == expected.dtype
        assert column.tobytes() == expected.tobytes()
    else:
        assert column == expected


def test_unsupported_id_types_are_left_to_the_upsert():
    assert copybin.ids(["1.5"], "numeric") is None
