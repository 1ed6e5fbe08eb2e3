"""PostgreSQL's binary COPY format, built with numpy.

Formatting vectors as text costs more than the database takes to store
them (DESIGN.md: 52 s to format 100k rows of vector(384) as text, 0.3 s to
build them in binary), so every bulk write embedlib makes goes through here.

A column is either a 1-D numpy array whose dtype is already the column's
big-endian wire format (see the helpers below), or a list of ``bytes``
(``None`` for NULL) for variable-length values such as text.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)

Column = np.ndarray | Sequence[bytes | None]


def int4(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(">i4")


def float4(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(">f4")


def boolean(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(np.uint8)


def fixed_text(values: Sequence[str] | np.ndarray, width: int) -> np.ndarray:
    """ASCII strings of exactly ``width`` characters (e.g. hex digests) as a fixed-width column."""
    return np.asarray(values, dtype=f"S{width}")


def constant_text(value: str, rows: int) -> np.ndarray:
    """The same text on every row, as a fixed-width column (no per-row Python work)."""
    encoded = value.encode("utf-8")
    if b"\0" in encoded or not encoded:
        raise ValueError("constant text must be non-empty and hold no NUL")  # numpy would strip trailing NULs
    return np.full(rows, encoded, dtype=f"S{len(encoded)}")


def text(values: Sequence[str]) -> list[bytes]:
    return [value.encode("utf-8") for value in values]


# Binary wire formats of the id types embedlib can COPY directly (others go through text and a cast).
_INTEGER_IDS = {"smallint": ">i2", "integer": ">i4", "bigint": ">i8"}
_TEXT_IDS = ("text", "character varying")


def ids(values: Sequence[str], id_type: str) -> Column | None:
    """Ids (in their text form) in the binary format of ``id_type``, or None if not supported here."""
    if id_type in _INTEGER_IDS:
        return np.array([int(v) for v in values], dtype=np.int64).astype(_INTEGER_IDS[id_type])
    if id_type == "uuid":
        return np.array([uuid.UUID(v).bytes for v in values], dtype="S16")
    if id_type.startswith(_TEXT_IDS):
        return text(values)
    return None


# The wire format of one value of each pgvector type: float4, or IEEE half for halfvec.
_VALUE_FORMATS = {"vector": ">f4", "halfvec": ">f2"}


def vector(matrix: np.ndarray, vector_type: str = "vector") -> np.ndarray:
    """pgvector's binary ``vector`` or ``halfvec``: int16 dimensions, int16 zero, then the values.

    For halfvec, values beyond float16's range would become infinities, which
    pgvector refuses: callers keep such rows out (see ``failures.unstorable_rows``).
    """
    rows, dimension = matrix.shape
    out = np.zeros(rows, dtype=_vector_format(vector_type, dimension))
    out["dim"] = dimension
    out["values"] = matrix
    return out


def _vector_format(vector_type: str, dimension: int) -> list[tuple[str, str] | tuple[str, str, tuple[int]]]:
    return [("dim", ">i2"), ("unused", ">i2"), ("values", _VALUE_FORMATS[vector_type], (dimension,))]


def payload(columns: Sequence[Column]) -> bytes:
    """A complete binary COPY stream (header, rows, trailer) for the given columns."""
    if not columns:
        raise ValueError("no columns")
    n_rows = len(columns[0])
    if any(len(column) != n_rows for column in columns):
        raise ValueError("columns differ in length")

    # Runs of fixed-width columns become one structured array each; the
    # first run starts with the per-row field count.
    segments: list[np.ndarray | list[bytes]] = []
    fixed: list[tuple[str, object]] = [("n_fields", ">i2")]
    fixed_values: list[tuple[str, object]] = [("n_fields", len(columns))]

    def close_fixed_run() -> None:
        if not fixed:
            return
        block = np.empty(n_rows, dtype=fixed)
        for name, value in fixed_values:
            block[name] = value
        segments.append(block)
        fixed.clear()
        fixed_values.clear()

    for index, column in enumerate(columns):
        if isinstance(column, np.ndarray):
            fixed.append((f"len{index}", ">i4"))
            fixed.append((f"val{index}", column.dtype))
            fixed_values.append((f"len{index}", column.dtype.itemsize))
            fixed_values.append((f"val{index}", column))
        else:
            close_fixed_run()
            segments.append([_NULL if v is None else struct.pack(">i", len(v)) + v for v in column])
    close_fixed_run()

    if len(segments) == 1 and isinstance(segments[0], np.ndarray):
        body = segments[0].tobytes()  # all fixed-width: no per-row Python work at all
    else:
        per_row = [_rows_of(s) if isinstance(s, np.ndarray) else s for s in segments]
        body = b"".join(part for row in zip(*per_row, strict=True) for part in row)
    return HEADER + body + TRAILER


def _rows_of(block: np.ndarray) -> list[memoryview]:
    raw = memoryview(block.tobytes())
    size = block.dtype.itemsize
    return [raw[start : start + size] for start in range(0, len(raw), size)]


def read_hashes_and_vectors(data: bytes, dimension: int, vector_type: str = "vector") -> tuple[list[str], np.ndarray]:
    """Parse ``COPY (SELECT text_hash, embedding ...) TO STDOUT (FORMAT binary)`` output; vectors as float32.

    Every row has the same width (a 32-character md5 and a ``vector_type``
    of ``dimension``), so the whole body is one numpy structured array.
    """
    if not data.startswith(HEADER[:11]):
        raise ValueError("not a binary COPY stream")
    extension_length = struct.unpack(">i", data[15:19])[0]
    body = data[19 + extension_length : -len(TRAILER)]
    row = np.dtype(
        [
            ("n_fields", ">i2"),
            ("hash_length", ">i4"),
            ("hash", "S32"),
            ("vector_length", ">i4"),
            *_vector_format(vector_type, dimension),
        ]
    )
    rows = np.frombuffer(body, dtype=row)
    if len(rows) and not ((rows["hash_length"] == 32).all() and (rows["dim"] == dimension).all()):
        raise ValueError("unexpected row layout in binary COPY stream")
    return [h.decode("ascii") for h in rows["hash"]], rows["values"].astype(np.float32)
