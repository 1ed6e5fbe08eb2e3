"""Rows the model cannot embed: find them, so the rest of their batch is stored.

When the model raises on a batch, the batch is split in halves, and each
half that fails again is split again, until the texts that fail are found
alone: about 2 log2(n) extra calls for one bad text among n. Their rows go
to the errors table (see ``Sink.record_failures``) and the run goes on.
A vector with NaN or infinity in it is a failure too: it is never stored;
so is the all-zero vector, which has no direction (cosine distance to it
is undefined, and pgvector answers NaN). Every reason written to the errors
table goes through ``redaction.redact``: an encoder's message may quote a key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from embedlib.errors import EncoderUnavailable, one_line
from embedlib.redaction import redact

NON_FINITE = "the model returned a non-finite vector (NaN or infinity)"
ZERO_VECTOR = (
    "the model returned the zero vector (or one too small for its squares to be told from zero), "
    "which has no direction (cosine distance to it is undefined)"
)
BEYOND_HALF = "the vector has values beyond halfvec's range (+-65504): store it with --dtype float"
HALF_MAX = float(np.finfo(np.float16).max)
_MAX_MESSAGE = 1000  # characters of an error kept in the errors table


def describe(exc: BaseException) -> str:
    """An exception as one line for the errors table, secrets masked (before it is cut: no half key is left)."""
    return redact(f"{type(exc).__name__}: {one_line(exc)}")[:_MAX_MESSAGE]


def isolate_failures(
    encode: Callable[[int, int], np.ndarray], count: int, dimension: int, *, worked_before: bool
) -> tuple[np.ndarray, dict[int, str]]:
    """Vectors for ``count`` texts, and why each text that failed alone failed (by position).

    ``encode(start, stop)`` encodes texts ``start:stop``. Rows of texts that
    failed are NaN. If every text fails and there is more than one, the model
    itself is broken (not the rows) unless it ``worked_before``: then the
    first error is raised, which stops the run rather than filling the
    errors table with every row of the table. ``EncoderUnavailable`` (a
    service that is down) is no text's fault: it is raised at once.
    """
    try:
        return encode(0, count), {}
    except EncoderUnavailable:
        raise
    except Exception as exc:
        first_error = exc
    vectors = np.full((count, dimension), np.nan, dtype=np.float32)
    errors: dict[int, str] = {}
    pending = [(0, count, first_error)]  # ranges that failed together, split until alone
    while pending:
        start, stop, error = pending.pop()
        if stop - start == 1:
            errors[start] = describe(error)
            continue
        middle = (start + stop) // 2
        for low, high in ((start, middle), (middle, stop)):
            try:
                vectors[low:high] = encode(low, high)
            except EncoderUnavailable:
                raise
            except Exception as exc:
                pending.append((low, high, exc))
    if len(errors) == count > 1 and not worked_before:
        raise first_error
    return vectors, errors


def unstorable_rows(vectors: np.ndarray, vector_type: str) -> dict[int, str]:
    """Why each vector that cannot be stored as ``vector_type`` cannot (by position).

    NaN or infinity never is, nor a vector with no direction: the zero
    vector, or one whose squares sum to zero in float32, where pgvector
    computes distances (1e-45 everywhere: its norm is 0 and every distance
    to it NaN). Judged as stored: for halfvec, after rounding to float16.
    For halfvec, neither is a value float16 would turn into infinity
    (pgvector refuses those, and with them the whole batch).
    """
    reasons = {int(position): NON_FINITE for position in np.flatnonzero(~np.isfinite(vectors).all(axis=1))}
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # NaN and infinity have a reason of their own
        as_stored = (vectors.astype(np.float16) if vector_type == "halfvec" else vectors).astype(np.float32)
        squares = np.sum(as_stored * as_stored, axis=1, dtype=np.float32)
        for position in np.flatnonzero(squares < np.finfo(np.float32).tiny):
            reasons.setdefault(int(position), ZERO_VECTOR)
        if vector_type == "halfvec":
            beyond = np.flatnonzero((np.abs(vectors) > HALF_MAX).any(axis=1))
            for position in beyond:
                reasons.setdefault(int(position), BEYOND_HALF)
    return reasons
