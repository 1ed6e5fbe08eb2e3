"""Reading an embeddings service's reply: every way it can be wrong ends in one redacted line.

A reply is used only if it is ``expected`` vectors of one length, each at an
index of its own (see ``remote``'s docstring for what a service may send).
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

from embedlib import redaction
from embedlib.errors import EncoderUnavailable

SHOWN = 200  # characters of the service's own words kept in a message
READ = 1 << 16  # characters of them read, to be redacted before they are cut to SHOWN


def parse_reply(reply: bytes, content_type: str, name: str) -> object:
    """The JSON of a 200's body, or the one line that says it is not JSON."""
    try:
        return json.loads(reply)
    except (ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        pass
    kind = content_type.split(";")[0].strip().lower() or "a body without a Content-Type"
    what = f"JSON that does not parse ({kind})" if "json" in kind else f"{kind}, not JSON"
    start = shown(reply[:READ].decode("utf-8", "replace"))
    quoted = f": {start!r}" if start else " (empty)"
    raise service_fault(name, f"sent {what}{quoted}")


def service_fault(name: str, what: str, *, transient: bool = False, status: int | None = None) -> EncoderUnavailable:
    """The service ``name`` cannot be used: ``what`` it did, redacted (it may quote the service)."""
    message = redaction.redact(f"the embeddings service {name!r} {what}")
    return EncoderUnavailable(message, transient=transient, status=status)


def vectors_of(payload: object, expected: int, name: str, dimension: int | None = None) -> np.ndarray:
    """The vectors of an embeddings response, in input order, as one float32 array.

    Raises ``EncoderUnavailable`` for a reply that is not ``expected``
    vectors of one length (``dimension``, when given), each at an index of
    its own: see the module's docstring.
    """

    def fault(what: str) -> EncoderUnavailable:
        return service_fault(name, f"sent {what}")

    if not isinstance(payload, dict):
        raise fault(f"JSON that is not an embeddings list (a {type(payload).__name__})")
    items = payload.get("data")
    if not isinstance(items, list):
        error = payload.get("error")
        if isinstance(error, dict):
            error = error.get("message", error)
        said = f": {shown(str(error))}" if error else ""
        raise fault(f"JSON that is not an embeddings list (no 'data' list){said}")
    if len(items) != expected:
        raise fault(f"{len(items)} vectors for {expected} texts")
    if not all(isinstance(item, dict) and "embedding" in item for item in items):
        raise fault("JSON that is not an embeddings list (an item without an 'embedding')")
    indices = [item.get("index") for item in items]
    if all(index is None for index in indices):
        order = list(range(expected))  # no indices at all: the reply's order is all there is
    elif sorted(index if _is_int(index) else -1 for index in indices) == list(range(expected)):
        order = [int(index) for index in indices]
    else:
        raise fault(f"indices {_summary(indices)} for {expected} texts: each of 0..{expected - 1} must come once")
    vectors: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * expected
    for position, item in zip(order, items, strict=True):
        try:
            vectors[position] = _vector(item["embedding"])
        except ValueError as exc:
            raise fault(f"an embedding that is not {exc}") from None
    lengths = sorted({len(vector) for vector in vectors})
    if len(lengths) > 1:
        raise fault(f"vectors of unequal lengths ({', '.join(map(str, lengths))}) in one reply")
    if not lengths:
        return np.zeros((0, dimension or 0), dtype=np.float32)
    if not lengths[0]:
        raise fault("empty vectors")
    if dimension is not None and lengths[0] != dimension:
        raise fault(f"vectors of {lengths[0]} dimensions, not {dimension} as at first: has its model changed?")
    return np.stack(vectors)


def _vector(embedding: object) -> np.ndarray:
    """One vector: a list of numbers, or base64 of little-endian float32 (``encoding_format="base64"``).

    Raises ValueError saying what it should have been.
    """
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("valid base64") from None
        if len(raw) % 4:
            raise ValueError(f"whole float32 values ({len(raw)} bytes of base64)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    if not isinstance(embedding, list):
        raise ValueError(f"a list of numbers (a {type(embedding).__name__})")
    try:
        values = np.asarray(embedding) if embedding else np.empty(0)
    except ValueError:  # ragged lists within it
        values = np.empty((0, 0))
    if values.ndim != 1 or values.dtype.kind not in "iuf":  # strings, null, booleans, lists: not numbers
        raise ValueError("a list of numbers")
    with np.errstate(over="ignore"):  # beyond float32: infinity, a row failures.unstorable_rows fails
        return values.astype(np.float32)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _summary(indices: list[object]) -> str:
    listed = ", ".join(shown(repr(index))[:24] for index in indices[:8])
    return f"[{listed}{', ...' if len(indices) > 8 else ''}]"


def shown(text: str) -> str:
    """The service's own words on one short line, its secrets masked before it is cut (no half key is left)."""
    return redaction.redact(" ".join(text[:READ].split()))[:SHOWN]
