"""Token ids counted once and run once: the planner's count is the model's input.

A text is tokenized when it is planned (its token count sorts it, budgets its
batch and is stored as ``token_count``); the ids made then travel with the
batch to the model, which runs on them as they are. ``TokenIds`` holds a
batch's ids end to end in one array, so choosing, reordering and padding
texts are numpy operations, never a Python loop over rows.

``FastTokenizer`` is the model's own tokenizer (the ``tokenizers`` library,
which tokenizes a batch on every core and releases the GIL meanwhile), used
directly: no per-call reconfiguration (which is what makes the Hugging Face
wrapper unsafe to call from two threads) and no per-row dictionaries. It is
only used for a model whose features it reproduces exactly (``local`` checks
that on probe texts when it loads the model); any other model is tokenized by
its own ``preprocess``, twice, as before: slower, never wrong.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOKEN_DTYPE = np.int32  # vocabularies are far below 2**31; half the bytes of int64 to carry and pickle


@dataclass(frozen=True)
class TokenIds:
    """The model's input ids of several texts: text ``i``'s are ``ids[offsets[i]:offsets[i + 1]]``,
    cut to the model's window; ``counts`` are the texts' tokens before that cut."""

    ids: np.ndarray
    offsets: np.ndarray  # int64, one more than there are texts, starting at 0
    counts: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def lengths(self) -> np.ndarray:
        """Ids per text as the model sees them (``counts`` cut to the window)."""
        return np.diff(self.offsets)

    def take(self, index: np.ndarray | Sequence[int]) -> TokenIds:
        """The texts at ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        starts, lengths = self.offsets[:-1][index], self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position p of the result comes from starts[text] + (p - offsets[text]).
        shift = np.repeat(starts - offsets[:-1], lengths)
        return TokenIds(self.ids[np.arange(offsets[-1], dtype=np.int64) + shift], offsets, self.counts[index])

    def slice(self, start: int, stop: int) -> TokenIds:
        """Texts ``start`` to ``stop``: views, no copy of the ids."""
        offsets = self.offsets[start : stop + 1]
        return TokenIds(self.ids[offsets[0] : offsets[-1]], offsets - offsets[0], self.counts[start:stop])

    def padded(self, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, attention mask)``, each ``texts x longest``, as int64 (what the model's embeddings take)."""
        lengths = self.lengths
        width = int(lengths.max()) if len(lengths) else 0
        mask = np.arange(width) < lengths[:, None]
        ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
        ids[mask] = self.ids  # row-major: each row's ids, in order, into its first ``length`` places
        return ids, mask.astype(np.int64)


class FastTokenizer:
    """Texts to ``TokenIds`` with a ``tokenizers.Tokenizer``: counted in full, cut to ``max_tokens``.

    Two copies of the tokenizer, each configured once: one without truncation
    (for every text: its ids are the count, and the input of all the texts that
    fit), one with the model's truncation, for the few texts longer than the
    window (re-tokenized, so that the cut is the tokenizer's own, special tokens
    and all). Neither is reconfigured after, so calls from several threads are safe.
    """

    def __init__(self, backend: Any, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        serialized = backend.to_str()
        self._full = Tokenizer.from_str(serialized)
        self._full.no_truncation()
        self._full.no_padding()
        self._cut = Tokenizer.from_str(serialized)
        self._cut.no_padding()
        self._cut.enable_truncation(max_tokens)
        self.max_tokens = max_tokens

    def __call__(self, texts: Sequence[str]) -> TokenIds:
        encodings = self._full.encode_batch_fast(list(texts))
        counts = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        over = np.flatnonzero(counts > self.max_tokens)
        lengths = counts
        if len(over):
            lengths = counts.copy()
            cut = self._cut.encode_batch_fast([texts[i] for i in over.tolist()])
            for position, encoding in zip(over, cut, strict=True):
                encodings[position] = encoding
                lengths[position] = len(encoding)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=TOKEN_DTYPE, count=offsets[-1])
        return TokenIds(ids, offsets, counts)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation (no ids kept)."""
        return list(map(len, self._full.encode_batch_fast(list(texts))))
