"""A row as read from the source, before planning."""

from __future__ import annotations

from typing import NamedTuple


class PendingRow(NamedTuple):
    id: str  # the source id in its text form; cast back to its type on write
    text: str | None
    text_hash: str | None  # md5 of the text, computed by PostgreSQL
    stored: bool = False  # the target has a row for this id already (an old text or model)
    seq: int | None = None  # its change queue entry's, on a tracked table (see db.queue)


def is_blank(text: str | None) -> bool:
    """NULL, empty or whitespace-only text: nothing to embed."""
    return text is None or not text.strip()
