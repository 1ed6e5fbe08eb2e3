"""Per-text metrics stored beside each vector: length, tokens, whether the model truncated it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedlib.encode.base import Encoder

UNKNOWN_TOKENS = -1  # written when the encoder has no tokenizer; stored as NULL


@dataclass(frozen=True)
class TextMetrics:
    """Metrics of distinct texts, one entry per text (arrays of equal length)."""

    char_length: np.ndarray
    token_count: np.ndarray  # UNKNOWN_TOKENS where the encoder cannot count
    truncated: np.ndarray  # token_count > the model's max sequence length

    def take(self, index: np.ndarray) -> TextMetrics:
        """The metrics at ``index`` (e.g. one entry per row from one per distinct text)."""
        return TextMetrics(self.char_length[index], self.token_count[index], self.truncated[index])

    @classmethod
    def of(cls, encoder: Encoder | None, texts: Sequence[str], token_counts: np.ndarray | None = None) -> TextMetrics:
        """Metrics of ``texts``; ``token_counts`` if already counted with the encoder's tokenizer."""
        char_length = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        count_tokens = getattr(encoder, "count_tokens", None)
        max_tokens = getattr(encoder, "max_tokens", None)
        if token_counts is not None:
            token_count = np.asarray(token_counts, dtype=np.int64)
        elif count_tokens is None:
            token_count = np.full(len(texts), UNKNOWN_TOKENS, dtype=np.int64)
        else:
            token_count = np.asarray(count_tokens(texts), dtype=np.int64)
        truncated = (token_count > max_tokens) if max_tokens else np.zeros(len(texts), dtype=bool)
        return cls(char_length, token_count, truncated)
