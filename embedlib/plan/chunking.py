"""Cutting a long text into chunks the model reads whole: pure functions, no database.

A text is cut into *units*: sentences, within paragraphs (a unit too long
on its own is cut between words). Units are then gathered into chunks of at
most ``max_tokens`` tokens, as the model's own tokenizer counts them.

Where a chunk ends is decided by the units themselves, not by where the
text starts, so that an edit moves few boundaries: a chunk may end after a
unit that ends a paragraph, or whose hash falls in a fixed fraction (about
one sentence in ``_SENTENCES_PER_BOUNDARY``), once it holds ``min_tokens``;
it must end before a unit that would take it past ``max_tokens``. After an
edit, the chunks before it are unchanged, and those after it are again as
before from the first boundary that the edit did not move: inserting a
sentence in the middle of a long document changes the chunk it lands in,
and seldom more than one or two beside it.

Every chunk is a slice of the text, ``text[start:end]``, so its offsets
point into the source as stored.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TokenCounter = Callable[[Sequence[str]], Sequence[int]]

# About one sentence in this many may end a chunk: with sentences of 20-30 tokens, chunks of a
# few sentences (and paragraphs end chunks too).
_SENTENCES_PER_BOUNDARY = 4
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? : ; and closing quotes or brackets, then whitespace; at a full stop
# of Chinese or Japanese text, which needs none; or before a list item on a new line.
_WIDE_STOPS = "\u3002\uff01\uff1f"  # the ideographic full stop, and the fullwidth ! and ?
_SENTENCE_END = re.compile(r"(?<=[.!?:;])[\"')\]]*\s+|(?<=[" + _WIDE_STOPS + r"])\s*|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    position: int  # 0, 1, ... within its text
    start: int  # character offsets in the text: the chunk is text[start:end]
    end: int
    text: str
    tokens: int  # as the model's tokenizer counts them, special tokens included


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int  # without the special tokens a count of the text alone adds
    ends_paragraph: bool


def chunk_text(
    text: str,
    count_tokens: TokenCounter,
    max_tokens: int,
    *,
    overlap_tokens: int = 0,
    min_tokens: int | None = None,
    tokens: int | None = None,
) -> list[Chunk]:
    """``text`` in chunks of at most ``max_tokens`` tokens (one chunk if it fits), cut where it has
    sentence or paragraph ends. ``overlap_tokens``: each chunk also begins with the last units of
    the one before, up to that many tokens (the model then sees each boundary in context).
    ``tokens``: the text's own count, where the caller has it already.

    The text is tokenized about twice (its units, and the chunks near the limit): a chunk's
    count is the sum of its units', which for a tokenizer that splits at whitespace first, as
    BERT's does, is exact; chunks within a few tokens of the limit are counted whole."""
    if max_tokens < 8:
        raise ValueError(f"chunks of {max_tokens} tokens are too small to hold a sentence's words")
    overhead = _overhead(count_tokens)  # [CLS] and [SEP], say
    budget = max_tokens - overhead
    whole = int(count_tokens([text])[0]) if tokens is None else tokens
    if whole <= max_tokens or not text.strip():
        return [Chunk(0, 0, len(text), text, whole)]
    units = _units(text, count_tokens, overhead, budget)
    groups = _gather(units, budget, min_tokens if min_tokens is not None else budget // 4, text)
    chunks = []
    for position, (first, last) in enumerate(groups):
        first = _with_overlap(units, first, last, overlap_tokens, budget)
        start, end = units[first].start, units[last].end
        tokens = overhead + sum(u.tokens for u in units[first : last + 1])
        chunks.append(Chunk(position, start, end, text[start:end], tokens))
    return _checked(text, chunks, count_tokens, max_tokens)


def _overhead(count_tokens: TokenCounter) -> int:
    """The tokens a count adds to any text (special tokens)."""
    return int(count_tokens([""])[0])


def _units(text: str, count_tokens: TokenCounter, overhead: int, budget: int) -> list[_Unit]:
    """Sentences (or, for one too long, runs of words) with their offsets and token counts."""
    spans: list[tuple[int, int, bool]] = []
    for paragraph in _split(text, _PARAGRAPH, 0, len(text)):
        sentences = _split(text, _SENTENCE_END, *paragraph)
        spans.extend((start, end, index == len(sentences) - 1) for index, (start, end) in enumerate(sentences))
    counts = count_tokens([text[start:end] for start, end, _ in spans])
    units = []
    for (start, end, last), count in zip(spans, counts, strict=True):
        if count - overhead <= budget:
            units.append(_Unit(start, end, max(int(count) - overhead, 0), last))
        else:
            units.extend(_word_runs(text, start, end, last, count_tokens, overhead, budget))
    return units


def _split(text: str, separator: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """The stretches of ``text[start:end]`` between matches of ``separator``, without the whitespace
    at their ends, as (start, end) offsets; none that is only whitespace."""
    pieces, at = [], start
    for match in separator.finditer(text, start, end):
        pieces.append((at, match.start()))
        at = match.end()
    pieces.append((at, end))
    trimmed = []
    for first, last in pieces:
        while first < last and text[first].isspace():
            first += 1
        while last > first and text[last - 1].isspace():
            last -= 1
        if first < last:
            trimmed.append((first, last))
    return trimmed


def _word_runs(
    text: str, start: int, end: int, ends_paragraph: bool, count_tokens: TokenCounter, overhead: int, budget: int
) -> list[_Unit]:
    """A unit too long for a chunk, as runs of whole words that fit; a word too long for one (a
    URL, base64, a language written without spaces) is cut between characters."""
    words: list[tuple[int, int]] = []
    counts: list[int] = []
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    for (first, last), count in zip(spans, count_tokens([text[a:b] for a, b in spans]), strict=True):
        if int(count) - overhead <= budget:
            words.append((first, last))
            counts.append(max(int(count) - overhead, 1))
            continue
        for piece in _char_pieces(text, first, last, count_tokens, overhead, budget):
            words.append(piece[:2])
            counts.append(piece[2])
    runs, first, tokens = [], 0, 0
    for index, count in enumerate(counts):
        if index > first and tokens + count > budget:
            runs.append(_Unit(words[first][0], words[index - 1][1], tokens, False))
            first, tokens = index, 0
        tokens += count
    runs.append(_Unit(words[first][0], words[-1][1], tokens, ends_paragraph))
    return runs


def _char_pieces(
    text: str, start: int, end: int, count_tokens: TokenCounter, overhead: int, budget: int
) -> list[tuple[int, int, int]]:
    """``text[start:end]`` (no whitespace in it) as pieces of at most ``budget`` tokens: (start, end,
    tokens). Each piece is as many characters as the tokens so far suggest, shortened until it fits."""
    pieces = []
    while start < end:
        length = end - start
        while True:
            tokens = int(count_tokens([text[start : start + length]])[0]) - overhead
            if tokens <= budget or length == 1:
                break
            length = max(1, min(length - 1, length * budget // max(tokens, 1)))
        pieces.append((start, start + length, max(tokens, 1)))
        start += length
    return pieces


def _gather(units: list[_Unit], budget: int, min_tokens: int, text: str) -> list[tuple[int, int]]:
    """Which units each chunk holds, as (first, last) indexes."""
    groups, first, tokens = [], 0, 0
    for index, unit in enumerate(units):
        if index > first and tokens + unit.tokens > budget:
            groups.append((first, index - 1))  # it must end here: the next unit does not fit
            first, tokens = index, 0
        tokens += unit.tokens
        if index + 1 < len(units) and tokens >= min_tokens and _may_end(unit, text):
            groups.append((first, index))
            first, tokens = index + 1, 0
    if first < len(units):
        groups.append((first, len(units) - 1))
    return groups


def _may_end(unit: _Unit, text: str) -> bool:
    """Whether a chunk may end after ``unit``: decided by the unit alone, wherever it stands."""
    if unit.ends_paragraph:
        return True
    return zlib.crc32(text[unit.start : unit.end].encode("utf-8")) % _SENTENCES_PER_BOUNDARY == 0


def _with_overlap(units: list[_Unit], first: int, last: int, overlap_tokens: int, budget: int) -> int:
    """The first unit of a chunk once the last units of the chunk before are added to its start."""
    tokens = sum(u.tokens for u in units[first : last + 1])
    added = 0
    while first > 0 and overlap_tokens > 0:
        before = units[first - 1].tokens
        if added + before > overlap_tokens or tokens + before > budget:
            break
        first, added, tokens = first - 1, added + before, tokens + before
    return first


# Chunks whose summed count comes this near the limit are counted whole: a tokenizer that does not
# split at whitespace first may count a joined text a token or two above the sum of its parts.
_SLACK = 8


def _checked(text: str, chunks: list[Chunk], count_tokens: TokenCounter, max_tokens: int) -> list[Chunk]:
    """The chunks, those near the limit counted whole; one over it is cut in two, at the whitespace
    nearest its middle (else its middle), and again until each piece fits (rare)."""
    slack = max(_SLACK, max_tokens // 10)
    near = [c for c in chunks if c.tokens > max_tokens - slack]
    counted = dict(zip((c.position for c in near), count_tokens([c.text for c in near]), strict=True)) if near else {}
    counts = [int(counted.get(c.position, c.tokens)) for c in chunks]
    if all(n <= max_tokens for n in counts):
        return [Chunk(c.position, c.start, c.end, c.text, n) for c, n in zip(chunks, counts, strict=True)]
    fixed: list[tuple[int, int, int]] = []  # start, end, tokens
    todo = [(c.start, c.end, n) for c, n in zip(chunks, counts, strict=True)][::-1]
    while todo:
        start, end, count = todo.pop()
        if count <= max_tokens or end - start <= 1:
            fixed.append((start, end, count))
            continue
        middle = start + max(1, _middle_space(text[start:end]))
        halves = [(start, middle), (middle, end)]
        counts_of = count_tokens([text[a:b] for a, b in halves])
        todo.extend(reversed([(a, b, int(n)) for (a, b), n in zip(halves, counts_of, strict=True)]))
    return [Chunk(position, a, b, text[a:b], n) for position, (a, b, n) in enumerate(fixed)]


def _middle_space(text: str) -> int:
    """The whitespace nearest the middle of ``text`` (its middle if it has none)."""
    middle = len(text) // 2
    spaces = [m.start() for m in re.finditer(r"\s", text)]
    return min(spaces, key=lambda at: abs(at - middle)) if spaces else middle
