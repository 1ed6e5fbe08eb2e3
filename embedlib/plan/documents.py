"""Batches for a chunked target: whole documents, their chunks, each distinct chunk encoded once.

A *document* is a distinct long text (the rows holding it share its chunks),
cut by ``chunking.chunk_text``. A batch holds whole documents, so that a
document's chunks are written in one transaction (no half-written document
is ever searched). Its ``texts`` are the distinct chunk texts that need the
model; chunks whose vector is stored already (by chunk hash: the same
paragraph in another document, or in an earlier run) are carried as
vectors in ``ChunkRows.reused``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlib.plan.batching import Batch, ChunkRows, TextGroup
from embedlib.plan.chunking import Chunk, TokenCounter, chunk_text


@dataclass(frozen=True)
class Document:
    group: TextGroup  # the text and the rows holding it
    chunks: list[Chunk]
    hashes: list[str]  # md5 of each chunk's text

    @property
    def rows(self) -> int:
        return len(self.group.ids)


def cut(groups: list[TextGroup], count_tokens: TokenCounter, max_tokens: int, overlap: int) -> list[Document]:
    """Each distinct text as a document of chunks."""
    documents = []
    for group in groups:
        if group.token_count is None:  # the row's own metric, and what tells a text that fits
            group.token_count = int(count_tokens([group.text])[0])
        chunks = chunk_text(group.text, count_tokens, max_tokens, overlap_tokens=overlap, tokens=group.token_count)
        hashes = [hashlib.md5(c.text.encode("utf-8")).hexdigest() for c in chunks]  # as PostgreSQL's md5()
        documents.append(Document(group, chunks, hashes))
    return documents


def batch_of_documents(
    documents: list[Document], stored: Mapping[str, np.ndarray], frequencies: Mapping[str, int]
) -> Batch:
    """One batch of whole ``documents``: each distinct chunk not in ``stored`` encoded once in it."""
    rows, texts, token_counts = _chunk_rows(documents, stored)
    # Batch.ids, text_hashes, frequencies, documents are per source row or document (for the row's
    # own metrics): text_index maps each source row to its document.
    doc_index = np.repeat(np.arange(len(documents)), [d.rows for d in documents])
    seqs = [seq for d in documents for seq in (d.group.seqs or [])]
    return Batch(
        texts=texts,
        text_hashes=[d.group.text_hash for d in documents],
        frequencies=np.array([frequencies.get(d.group.text_hash, 1) for d in documents], dtype=np.int64),
        ids=[row_id for d in documents for row_id in d.group.ids],
        text_index=doc_index.astype(np.intp),
        vectors=None,
        token_counts=np.array(token_counts, dtype=np.int64),
        seqs=seqs if all(d.group.seqs is not None for d in documents) else None,
        chunks=rows,
        documents=[d.group.text for d in documents],
        document_tokens=np.array([d.group.token_count or 0 for d in documents], dtype=np.int64),
    )


def _chunk_rows(documents: list[Document], stored: Mapping[str, np.ndarray]) -> tuple[ChunkRows, list[str], list[int]]:
    """The target rows of ``documents``; the distinct chunk texts to encode, and their tokens."""
    to_encode: dict[str, int] = {}  # chunk hash -> position in texts
    texts: list[str] = []
    token_counts: list[int] = []
    reused: dict[str, int] = {}  # chunk hash -> row in reused_vectors
    reused_vectors: list[np.ndarray] = []
    names = ("ids", "chunk", "start", "end", "hash", "tokens", "text", "reuse", "row")
    columns: dict[str, list[Any]] = {name: [] for name in names}  # one entry per target row each
    first_row = 0
    for document in documents:
        for position, (piece, digest) in enumerate(zip(document.chunks, document.hashes, strict=True)):
            index, reuse = -1, -1
            if digest in stored:
                reuse = reused.setdefault(digest, len(reused))
                if reuse == len(reused_vectors):
                    reused_vectors.append(stored[digest])
            else:
                index = to_encode.setdefault(digest, len(to_encode))
                if index == len(texts):
                    texts.append(piece.text)
                    token_counts.append(piece.tokens)
            for offset, row_id in enumerate(document.group.ids):
                values = (
                    row_id,
                    position,
                    piece.start,
                    piece.end,
                    digest,
                    piece.tokens,
                    index,
                    reuse,
                    first_row + offset,
                )
                for name, value in zip(columns, values, strict=True):
                    columns[name].append(value)
        first_row += document.rows
    # The texts by length: the model pads each call's texts to its longest (see batching).
    order = np.argsort(np.array(token_counts, dtype=np.int64), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    texts, token_counts = [texts[i] for i in order], [token_counts[i] for i in order]
    columns["text"] = [int(rank[i]) if i >= 0 else -1 for i in columns["text"]]
    dimension = reused_vectors[0].shape[0] if reused_vectors else 0
    rows = ChunkRows(
        ids=columns["ids"],
        chunk=np.array(columns["chunk"], dtype=np.int64),
        start=np.array(columns["start"], dtype=np.int64),
        end=np.array(columns["end"], dtype=np.int64),
        chunk_hash=columns["hash"],
        chunk_tokens=np.array(columns["tokens"], dtype=np.int64),
        text_index=np.array(columns["text"], dtype=np.intp),
        reuse_index=np.array(columns["reuse"], dtype=np.intp),
        reused=np.stack(reused_vectors) if reused_vectors else np.zeros((0, dimension), dtype=np.float32),
        row=np.array(columns["row"], dtype=np.intp),
    )
    return rows, texts, token_counts
