"""From rows to batches for the encoder: pure functions, no database.

A window holds many batches' worth of rows. Within it, rows with the same
text are folded so each distinct text is encoded once, and distinct texts
are sorted by length (in tokens, where the model's tokenizer counted them)
so each batch pads to a similar length: the model pads every text in a
call to the longest one. A batch of ``batch_size`` texts is one transaction;
within it, ``budget_slices`` cuts the model's calls to a token budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embedlib.encode.tokens import TokenIds
from embedlib.source.rows import PendingRow


@dataclass(frozen=True)
class ChunkRows:
    """The target rows of a chunked batch, one per (source row, chunk), arrays of equal length."""

    ids: list[str]  # the source row's id, repeated for each of its chunks
    chunk: np.ndarray  # the chunk's position in its text
    start: np.ndarray  # its character offsets in the text
    end: np.ndarray
    chunk_hash: list[str]
    chunk_tokens: np.ndarray
    text_index: np.ndarray  # the position of its text in Batch.texts, or -1 where reused
    reuse_index: np.ndarray  # its row in ``reused``, or -1 where encoded
    reused: np.ndarray  # stored vectors of the chunks that need no model
    row: np.ndarray  # which source row of the batch it belongs to: an index into Batch.ids

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Batch:
    """Distinct texts to encode (or whose vectors are known), and every row that holds one of them."""

    texts: list[str]
    text_hashes: list[str]  # one per distinct text
    frequencies: np.ndarray  # one per distinct text: rows of the whole source that hold it
    ids: list[str]  # one per row
    text_index: np.ndarray  # for each row, the position of its text in ``texts``
    vectors: np.ndarray | None = None  # stored vectors reused for ``texts``; None: encode them
    new_rows: bool = False  # no row of the batch was in the target when read: a plain COPY can insert them
    token_counts: np.ndarray | None = None  # one per distinct text, when the planner counted them
    tokens: TokenIds | None = None  # the ids the model runs on, one per distinct text, when the planner made them
    seqs: list[int] | None = None  # one per row, on a tracked table: its change queue entry's (see db.queue)
    # A chunked target's batch (plan.documents): ``texts`` are the chunk texts to encode (with
    # ``token_counts``), ``text_hashes``, ``frequencies`` and ``documents`` (with their
    # ``document_tokens``) are per distinct document, which ``text_index`` maps each row to, and
    # ``chunks`` the target rows to write.
    chunks: ChunkRows | None = None
    documents: list[str] | None = None
    document_tokens: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.ids)


def estimated_tokens(text: str) -> int:
    """A token estimate where no tokenizer is known: English averages about 4 characters a token."""
    return len(text) // 4 + 2  # + [CLS] and [SEP]


@dataclass(slots=True)  # one per distinct text of a window: made by the ten thousand
class TextGroup:
    """One distinct text and the ids of the rows holding it."""

    text_hash: str
    text: str
    ids: list[str]
    stored: bool  # some row holding it has a target row already
    token_count: int | None = None  # from the model's tokenizer, once counted
    token_row: int | None = None  # its position in the window's ``TokenIds``, once tokenized
    seqs: list[int] | None = None  # one per id, for rows read from a change queue


def group_by_text(rows: list[PendingRow]) -> list[TextGroup]:
    """Fold rows with the same text (blank rows must be filtered out before)."""
    groups: dict[str, TextGroup] = {}
    for row_id, text, text_hash, stored, seq in rows:
        assert text is not None and text_hash is not None, "blank rows are filtered before batching"
        group = groups.get(text_hash)
        if group is None:
            groups[text_hash] = TextGroup(text_hash, text, [row_id], stored, seqs=None if seq is None else [seq])
        else:
            group.ids.append(row_id)
            group.stored = group.stored or stored
            if group.seqs is not None and seq is not None:
                group.seqs.append(seq)
    return list(groups.values())


def make_batches(
    groups: list[TextGroup],
    batch_size: int,
    *,
    frequencies: Mapping[str, int],
    max_tokens: int | None = None,
    tokens: TokenIds | None = None,
) -> list[Batch]:
    """Sort distinct texts by length and cut them into batches of ``batch_size``.

    Length is the token count where the groups carry one (what the model
    pads to, so a batch of equal counts wastes nothing), else an estimate
    from characters. ``max_tokens`` is the model's sequence limit: longer
    texts are truncated, so they cost no more than that. ``frequencies``
    gives how many source rows hold a text (absent: one). ``tokens``: the
    window's token ids, which each group's ``token_row`` points into.
    """

    def cost(group: TextGroup) -> int:
        return encode_cost(group.text, group.token_count, max_tokens)

    ordered = sorted(groups, key=lambda g: (cost(g), len(g.text)))
    return [
        batch_of(ordered[start : start + batch_size], frequencies, tokens=tokens)
        for start in range(0, len(ordered), batch_size)
    ]


def encode_cost(text: str, token_count: int | None, max_tokens: int | None) -> int:
    """What a text costs the model: its tokens (estimated if not counted), up to the model's limit."""
    tokens = estimated_tokens(text) if token_count is None else token_count
    return min(tokens, max_tokens) if max_tokens else tokens


def budget_slices(costs: Sequence[int], budget: int) -> list[slice]:
    """Cut texts (in order) into runs whose ``texts x longest`` stays within ``budget`` tokens.

    The model pads every text of a call to the longest, so that product is
    what a call computes on; smaller calls also stay in the CPU's caches
    (docs/performance.md has the figures, with ``benchmarks.compare model``).
    A text over the budget on its own gets a call to itself.
    """
    slices = []
    start, longest = 0, 0
    for position, cost in enumerate(costs):
        longest = max(longest, cost)
        if position > start and (position - start + 1) * longest > budget:
            slices.append(slice(start, position))
            start, longest = position, cost
    if start < len(costs):
        slices.append(slice(start, len(costs)))
    return slices


def batch_of(
    groups: list[TextGroup],
    frequencies: Mapping[str, int],
    vectors: np.ndarray | None = None,
    *,
    tokens: TokenIds | None = None,
) -> Batch:
    """The batch of ``groups``: their ``vectors`` if stored, else their ``tokens`` for the model
    (the window's: see ``make_batches``), if tokenized."""
    ids: list[str] = []
    index: list[int] = []
    seqs: list[int] | None = [] if groups and all(g.seqs is not None for g in groups) else None
    for position, group in enumerate(groups):
        ids.extend(group.ids)
        index.extend([position] * len(group.ids))
        if seqs is not None and group.seqs is not None:
            seqs.extend(group.seqs)
    counted = all(g.token_count is not None for g in groups)
    chosen = None
    if tokens is not None and vectors is None and groups and all(g.token_row is not None for g in groups):
        chosen = tokens.take(np.array([g.token_row for g in groups], dtype=np.int64))
    return Batch(
        texts=[g.text for g in groups],
        text_hashes=[g.text_hash for g in groups],
        frequencies=np.array([frequencies.get(g.text_hash, 1) for g in groups], dtype=np.int64),
        ids=ids,
        text_index=np.array(index, dtype=np.intp),
        vectors=vectors,
        new_rows=not any(g.stored for g in groups),
        token_counts=np.array([g.token_count for g in groups], dtype=np.int64) if counted and groups else None,
        seqs=seqs,
        tokens=chosen,
    )
