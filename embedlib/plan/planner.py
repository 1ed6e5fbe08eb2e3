"""From windows of pending rows to batches: what to skip, what to reuse, what to encode.

For each window the planner
- counts blank rows as skipped and records them so (and deletes the vectors they had: that
  text is gone), so that they are not pending again until their text changes;
- folds rows with the same text, so each distinct text is encoded once;
- reuses the vector the target already holds for a text (same model), by
  hash, so a text that appears again later in the run, or was embedded by an
  earlier run for another row, costs no encoding;
- holds the rows of a text that this run has sent to the encoder but whose
  vector is not committed yet (still in flight) until it is (``awaiting``), then
  reuses the vector; defers the rows of a text another run sharing the table
  has claimed (see ``source.sharing``) to a later pass, which plans them again
  and reuses the vector that run stores;
- counts tokens with the model's tokenizer, then sorts what is left by
  token count and cuts it into batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embedlib.db.relations import TargetTable
from embedlib.db.session import Session
from embedlib.encode.tokens import TokenIds
from embedlib.plan.awaiting import InFlight
from embedlib.plan.batching import Batch, TextGroup, batch_of, group_by_text, make_batches
from embedlib.plan.documents import Document, batch_of_documents, cut
from embedlib.source.reader import has_vectors, stored_vectors
from embedlib.source.rows import PendingRow, is_blank
from embedlib.source.sharing import Sharing


@dataclass
class PlanOptions:
    batch_size: int
    max_tokens: int | None = None  # the model's sequence limit
    # The model's token counter: counted here, texts are sorted by tokens and
    # the writer needs no second count. None: sort by characters.
    count_tokens: Callable[[Sequence[str]], Sequence[int]] | None = None
    # The model's tokenizer, where it can hand the model its ids (see encode.tokens): then texts
    # are tokenized once, here, and their batches carry the ids to the model.
    tokenize: Callable[[Sequence[str]], TokenIds] | None = None
    metrics_only: bool = False
    defer_in_flight: bool = True  # False in later passes: this run's own batches are all written
    respect_claims: bool = True  # False: encode texts other runs claimed too (after waiting too long for them)
    # True: claim every text before encoding it, not only those the source holds more than once (a
    # tracked table's runs know no counts of the source, and several may read its queue at once).
    claim_every_text: bool = False
    # How many texts sent to the encoder are remembered: enough to cover every
    # batch in flight (a window's worth and the executor's queues) several times.
    recent_hashes: int = 50_000
    # A chunked target: texts longer than this are cut into chunks (plan.chunking), each embedded.
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    # Whether the target held vectors of this model when the pass began (None: ask it). False: only
    # texts this run sent to the encoder can have vectors there, so only those are looked up.
    had_vectors: bool | None = None


class Planner:
    """Plans the batches of one pass over a ``PendingReader`` (or a ``changes.QueueReader``).

    After the pass: ``skipped`` blank rows, and ``deferred`` rows left for a
    later pass: ``deferred_rows``, which that pass reads again by id.
    """

    def __init__(
        self,
        session: Session,
        target: TargetTable,
        model: str,
        frequencies: Mapping[str, int],
        options: PlanOptions,
        sharing: Sharing,
        on_blank: Callable[[list[PendingRow]], None],
        in_flight: InFlight,
    ) -> None:
        """``on_blank(rows)`` is told of the blank rows of each window, to record them; rows of a
        text this run is encoding wait in ``in_flight`` (which the run's writers report to)."""
        self._session = session
        self._sharing = sharing
        self._on_blank = on_blank
        self._target = target
        self._model = model
        self._frequencies = frequencies
        self._options = options
        self._sent: OrderedDict[str, None] = OrderedDict()  # hashes sent to the encoder, oldest first
        self.skipped = 0
        self.deferred = 0
        self.deferred_rows: list[PendingRow] = []
        self.in_flight = in_flight
        had = options.had_vectors
        if had is None:
            had = session.run(lambda conn: has_vectors(conn, target, model))
        self._had_vectors = options.metrics_only or had

    def batches(self, windows: Iterable[list[PendingRow]]) -> Iterator[Batch]:
        """The batches of each window of rows (a ``PendingReader``, a ``changes.QueueReader``, or
        the rows an earlier pass deferred)."""
        for window in windows:
            yield from self._sending(self._plan(window))
            yield from self._sending(self._reuse(self.in_flight.ready(wait=False) or []))
        while (ready := self.in_flight.ready(wait=True)) is not None:
            yield from self._sending(self._reuse(ready))
        for group in self.in_flight.give_up():
            self._defer(group)

    def _sending(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches``, each counted as sent to the writers that report to ``in_flight``."""
        for batch in batches:
            if batch.chunks is None:  # (a chunked batch's writer reports nothing: its chunks wait otherwise)
                self.in_flight.sent()
            yield batch

    def _reuse(self, groups: list[TextGroup]) -> Iterator[Batch]:
        """Batches of ``groups`` whose text this pass has written; any whose vector is not there
        (the model failed on it) are left for a later pass."""
        if not groups:
            return
        hashes = [g.text_hash for g in groups]
        stored = self._session.run(lambda conn: stored_vectors(conn, self._target, self._model, hashes))
        for group in groups:
            if group.text_hash not in stored:
                self._defer(group)
        yield from self._reused([g for g in groups if g.text_hash in stored], stored)

    def _reused(self, groups: list[TextGroup], stored: Mapping[str, np.ndarray]) -> Iterator[Batch]:
        """Batches of ``groups`` with the vectors the target stores for their texts."""
        size = self._options.batch_size
        for start in range(0, len(groups), size):
            part = groups[start : start + size]
            yield batch_of(part, self._frequencies, np.stack([stored[g.text_hash] for g in part]))

    def _defer(self, group: TextGroup) -> None:
        """Leave the rows of ``group`` for a later pass."""
        self.deferred += len(group.ids)
        seqs: list[int | None] = list(group.seqs) if group.seqs else [None] * len(group.ids)
        self.deferred_rows += [
            PendingRow(row_id, group.text, group.text_hash, group.stored, seq)
            for row_id, seq in zip(group.ids, seqs, strict=True)
        ]

    def _plan(self, window: list[PendingRow]) -> Iterator[Batch]:
        options = self._options
        rows: list[PendingRow] = []
        blank: list[PendingRow] = []
        for row in window:
            (blank if is_blank(row.text) else rows).append(row)
        self.skipped += len(blank)
        if blank and not options.metrics_only:
            self._on_blank(blank)
        groups = group_by_text(rows)
        # (A chunked target's documents are counted as they are cut, a batch's worth at a time.)
        tokens = self._count(groups) if options.chunk_tokens is None else None
        if options.metrics_only:
            yield from self._cut(groups)
            return
        if options.chunk_tokens is not None:
            yield from self._plan_documents(groups)
            return

        # A target that held no vector of this model when the run began, and that
        # no other run is writing to, can only hold the vectors of texts this run
        # has sent to the encoder: only those are worth looking up.
        look_up_all = self._had_vectors or self._sharing.others_seen
        candidates = [g.text_hash for g in groups if look_up_all or g.text_hash in self._sent]
        stored = self._session.run(lambda conn: stored_vectors(conn, self._target, self._model, candidates))
        reuse = [g for g in groups if g.text_hash in stored]
        to_encode = []
        for group in groups:
            if group.text_hash in stored:
                continue
            if options.defer_in_flight and group.text_hash in self._sent:
                self.in_flight.wait_for(group)
                continue
            to_encode.append(group)
        to_encode = self._claimed(to_encode)
        for group in to_encode:
            self._remember(group.text_hash)
        yield from self._reused(reuse, stored)
        yield from self._cut(to_encode, tokens)

    def _count(self, groups: list[TextGroup]) -> TokenIds | None:
        """Count the groups' tokens; their ids for the model too, where the tokenizer can give them."""
        options, texts = self._options, [g.text for g in groups]
        tokens = None
        if not texts:
            return None
        if options.tokenize is not None and not options.metrics_only:
            tokens = options.tokenize(texts)
            counts = tokens.counts.tolist()
        elif options.count_tokens is not None:
            counts = list(options.count_tokens(texts))
        else:
            return None
        for position, (group, count) in enumerate(zip(groups, counts, strict=True)):
            group.token_count, group.token_row = count, position
        return tokens

    def _plan_documents(self, groups: list[TextGroup]) -> Iterator[Batch]:
        """A chunked target's batches: each text cut into chunks, a batch's worth of documents at a
        time (the model starts on the first while the rest are cut), each distinct chunk encoded
        once in its batch, a chunk stored already (here or in another document) reused; a document
        with a chunk in flight in an earlier batch, or claimed by another run, is deferred whole, as
        a row's text is."""
        options = self._options
        if not groups or options.count_tokens is None:
            # No text to cut, or no tokenizer: the run found nothing to encode and loaded no model,
            # and these rows came since; they are the next run's.
            return
        assert options.chunk_tokens is not None
        documents: list[Document] = []
        for group in groups:
            documents += cut([group], options.count_tokens, options.chunk_tokens, options.chunk_overlap)
            if sum(len(d.chunks) for d in documents) >= options.batch_size:
                yield from self._document_batches(documents)
                documents = []
        yield from self._document_batches(documents)

    def _document_batches(self, documents: list[Document]) -> Iterator[Batch]:
        options = self._options
        if not documents:
            return
        hashes = {h for d in documents for h in d.hashes}
        look_up_all = self._had_vectors or self._sharing.others_seen
        candidates = [h for h in hashes if look_up_all or h in self._sent]
        stored = self._session.run(
            lambda conn: stored_vectors(conn, self._target, self._model, candidates, chunks=True)
        )
        new = sorted(h for h in hashes if h not in stored)
        mine = set(new)
        if options.claim_every_text and options.respect_claims and new:
            mine = self._session.run(lambda conn: self._sharing.claim_texts(conn, new))
        kept = []
        for document in documents:  # documents sharing a new chunk share this batch: it is encoded once
            if any(h not in stored and (h not in mine or self._in_flight(h)) for h in document.hashes):
                self._defer(document.group)
            else:
                kept.append(document)
        for digest in {h for d in kept for h in d.hashes if h not in stored}:
            self._remember(digest)
        if kept:
            yield batch_of_documents(kept, stored, self._frequencies)

    def _in_flight(self, text_hash: str) -> bool:
        return self._options.defer_in_flight and text_hash in self._sent

    def _claimed(self, groups: list[TextGroup]) -> list[TextGroup]:
        """The groups this run may encode: other runs may hold rows with the same text only
        if it is duplicated; those texts are claimed first, and the others' claims deferred.
        (Claimed whether or not another run is seen yet: one may start at any moment, and no
        text is encoded twice across runs.)"""
        every = self._options.claim_every_text
        shared = [g.text_hash for g in groups if every or g.text_hash in self._frequencies]
        if not shared or not self._options.respect_claims:
            return groups
        mine = self._session.run(lambda conn: self._sharing.claim_texts(conn, shared))
        kept = []
        for group in groups:
            if (every or group.text_hash in self._frequencies) and group.text_hash not in mine:
                self._defer(group)
            else:
                kept.append(group)
        return kept

    def _cut(self, groups: list[TextGroup], tokens: TokenIds | None = None) -> list[Batch]:
        options = self._options
        return make_batches(
            groups, options.batch_size, frequencies=self._frequencies, max_tokens=options.max_tokens, tokens=tokens
        )

    def _remember(self, text_hash: str) -> None:
        self._sent[text_hash] = None
        if len(self._sent) > self._options.recent_hashes:
            self._sent.popitem(last=False)  # O(1); deleting a plain dict's first key is not
