"""From a window of pending rows to batches for the encoder.

A window holds many batches' worth of rows. Within it, rows with the same
text are folded so each distinct text is encoded once, and distinct texts
are sorted by length so each batch pads to a similar length (the model pads
every text in a call to the longest one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class PendingRow(NamedTuple):
    id: str  # the source id in its text form; cast back to its type on write
    text: str | None
    text_hash: str | None  # md5 of the text, computed by PostgreSQL


@dataclass(frozen=True)
class Batch:
    """Distinct texts to encode, and every row that holds one of them."""

    texts: list[str]
    text_hashes: list[str]  # one per distinct text
    ids: list[str]  # one per row
    text_index: np.ndarray  # for each row, the position of its text in ``texts``

    @property
    def rows(self) -> int:
        return len(self.ids)


def is_blank(text: str | None) -> bool:
    """NULL, empty or whitespace-only text: nothing to embed."""
    return text is None or not text.strip()


def make_batches(rows: list[PendingRow], batch_size: int) -> list[Batch]:
    """Fold duplicate texts, sort by length, cut into batches of ``batch_size`` distinct texts."""
    ids_by_hash: dict[str, list[str]] = {}
    text_by_hash: dict[str, str] = {}
    for row in rows:
        assert row.text is not None and row.text_hash is not None, "blank rows are filtered before batching"
        ids_by_hash.setdefault(row.text_hash, []).append(row.id)
        text_by_hash[row.text_hash] = row.text
    ordered = sorted(text_by_hash, key=lambda h: len(text_by_hash[h]))

    batches = []
    for start in range(0, len(ordered), batch_size):
        hashes = ordered[start : start + batch_size]
        ids: list[str] = []
        index: list[int] = []
        for position, text_hash in enumerate(hashes):
            holders = ids_by_hash[text_hash]
            ids.extend(holders)
            index.extend([position] * len(holders))
        batches.append(
            Batch(
                texts=[text_by_hash[h] for h in hashes],
                text_hashes=hashes,
                ids=ids,
                text_index=np.array(index, dtype=np.intp),
            )
        )
    return batches
