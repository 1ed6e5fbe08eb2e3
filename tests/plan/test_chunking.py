"""Cutting long texts into chunks: each within the model's window, cut at sentence or paragraph
ends, slices of the text, and stable under edits."""

from __future__ import annotations

import collections
import itertools
import pydoc
import string
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlib.plan.chunking import chunk_text


def words(texts: Sequence[str]) -> list[int]:
    """A tokenizer counting words, with two special tokens, as BERT-like models add."""
    return [len(t.split()) + 2 for t in texts]


sentence = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]), min_size=1, max_size=30
).map(lambda ws: " ".join(ws).capitalize() + ".")
paragraph = st.lists(sentence, min_size=1, max_size=8).map(" ".join)
document = st.lists(paragraph, min_size=1, max_size=30).map("\n\n".join)


def changed(before: list, after: list) -> int:  # type: ignore[type-arg]
    """How many chunks of ``after`` are not among those of ``before`` (they need encoding)."""
    return sum((collections.Counter(c.text for c in after) - collections.Counter(c.text for c in before)).values())


@settings(max_examples=60, deadline=None)
@given(document, st.sampled_from([16, 40, 100]))
def test_chunks_fit_the_window_and_are_the_texts_own_slices_in_order(text, max_tokens):
    chunks = chunk_text(text, words, max_tokens)
    assert all(c.tokens <= max_tokens and c.tokens == words([c.text])[0] for c in chunks)
    assert all(c.text == text[c.start : c.end] for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(a.end <= b.start for a, b in itertools.pairwise(chunks))  # in order, no overlap
    # Nothing is left out: every word of the text is in a chunk.
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert chunk_text(text, words, max_tokens) == chunks  # the same text, the same chunks


@settings(max_examples=60, deadline=None)
@given(document, sentence, st.floats(0.1, 0.9))
def test_inserting_a_sentence_changes_few_chunks(text, inserted, where):
    at = text.find(". ", int(len(text) * where))
    if at < 0:
        return
    edited = text[: at + 2] + inserted + " " + text[at + 2 :]
    assert changed(chunk_text(text, words, 40), chunk_text(edited, words, 40)) <= 4


def test_overlap_repeats_the_end_of_the_chunk_before():
    text = " ".join(f"Sentence {word} is here." for word in string.ascii_lowercase * 3)
    chunks = chunk_text(text, words, 30, overlap_tokens=8)
    assert len(chunks) > 2 and all(c.tokens <= 30 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # it starts inside the chunk before
        assert text[after.start : before.end] == before.text[after.start - before.start :]


def test_a_sentence_longer_than_the_window_is_cut_between_words():
    text = " ".join(["word"] * 100)  # no sentence end at all
    chunks = chunk_text(text, words, 20)
    assert all(c.tokens <= 20 for c in chunks) and " ".join(c.text for c in chunks).split() == text.split()


def test_a_short_text_is_one_chunk():
    assert [(c.start, c.end, c.tokens) for c in chunk_text("One short text.", words, 20)] == [(0, 15, 5)]


@pytest.mark.model
def test_with_the_models_tokenizer_an_inserted_sentence_changes_at_most_four_chunks():
    from embedlib.encode.base import resolve_encoder

    count = resolve_encoder("all-MiniLM-L6-v2").count_tokens  # type: ignore[attr-defined]
    text = pydoc.render_doc(collections, renderer=pydoc.plaintext)[:14_000]  # about 3,000 tokens
    assert 2500 < count([text])[0] < 4500
    chunks = chunk_text(text, count, 256)
    assert all(c.tokens <= 256 for c in chunks) and len(chunks) >= 10
    at = text.find(". ", len(text) // 2) + 2
    edited = text[:at] + "A sentence inserted in the middle of the document. " + text[at:]
    assert changed(chunks, chunk_text(edited, count, 256)) <= 4


def characters(texts: Sequence[str]) -> list[int]:
    """A tokenizer counting a token per four characters, spaces or not (as BPE does for a URL)."""
    return [-(-len(t) // 4) + 2 for t in texts]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 5000,  # base64, a URL, minified code: no space, no sentence end
        "这是一个很长的句子，用来测试没有空格的文字。" * 60,  # noqa: RUF001 (sentences ending with no space after)
        "Short words here. " + "y" * 900 + " and after it. " * 20,
    ],
)
def test_text_without_spaces_is_cut_within_the_window_too(text):
    chunks = chunk_text(text, characters, 64)
    assert len(chunks) > 1 and all(c.tokens <= 64 and characters([c.text])[0] <= 64 for c in chunks)
    assert "".join(text[c.start : c.end] for c in chunks).replace(" ", "") == text.replace(" ", "")
    if "。" in text:
        assert all(c.text.endswith("。") for c in chunks)
