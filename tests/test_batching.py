"""Planning batches: folding duplicates, sorting by length, row and token budgets (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from embedlib import copybin
from embedlib.batching import PendingRow, estimated_tokens, group_by_text, make_batches


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


def test_token_budget_closes_a_batch_before_its_row_cap():
    texts = [f"{'word ' * n}{i}" for i, n in enumerate((1, 1, 1, 1, 100, 100, 100))]
    groups = group_by_text(rows_of(texts))
    budget = 2 * estimated_tokens(texts[-1])  # room for two of the longest texts
    batches = make_batches(groups, 100, frequencies={}, batch_tokens=budget)
    for batch in batches:
        longest = max(estimated_tokens(t) for t in batch.texts)
        assert len(batch.texts) * longest <= budget or len(batch.texts) == 1
    assert [len(b.texts) for b in batches][-2:] == [2, 1]  # the long ones, two to a batch
    assert sum(len(b.texts) for b in batches) == len(texts)
    # the model truncates: past max_tokens a text costs no more, so more fit
    capped = make_batches(groups, 100, frequencies={}, batch_tokens=budget, max_tokens=budget // 3)
    assert len(capped) < len(batches)


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
