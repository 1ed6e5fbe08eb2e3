"""A fast, deterministic stand-in encoder for tests and database-path benchmarks.

Not a model: vectors come from a hash of the text, so equal texts get equal
vectors, in every process, and different texts different ones (three 12-bit
slices of a 64-bit checksum pick rows of three fixed random tables: 2^36
combinations). Fast enough that a benchmark with it measures the database
path, not the encoder. Use the real model to test what a model does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

_TABLE_BITS = 12


class HashEncoder:
    """Unit vectors derived from a hash of each text. Picklable, thread-safe."""

    max_tokens = 64  # "tokens" are whitespace-separated words here

    def __init__(self, dimension: int = 16, name: str = "hash-encoder") -> None:
        self.dimension = dimension
        self.name = name
        rng = np.random.default_rng(dimension)  # the same tables in every process
        self._tables = rng.standard_normal((3, 1 << _TABLE_BITS, dimension)).astype(np.float32)

    def __reduce__(self) -> tuple[type[HashEncoder], tuple[int, str]]:
        return type(self), (self.dimension, self.name)  # the tables are rebuilt, not pickled

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encoded = [t.encode("utf-8") for t in texts]
        # 64 bits from two CRC-32s with different starting values: a third of blake2b's cost.
        seeds = np.fromiter((zlib.crc32(b) | zlib.crc32(b, 0x9E3779B9) << 32 for b in encoded), np.uint64, len(texts))
        mask = np.uint64((1 << _TABLE_BITS) - 1)
        vectors = self._tables[0][(seeds & mask).astype(np.intp)]
        for table_number in (1, 2):
            rows = ((seeds >> np.uint64(_TABLE_BITS * table_number)) & mask).astype(np.intp)
            vectors += self._tables[table_number][rows]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


class FailingEncoder(HashEncoder):
    """A HashEncoder that fails where told: it raises on any call holding a text in ``poison``,
    and returns NaN vectors for texts in ``nan``. For testing how failures are handled; it lives
    here, not in a test, so that worker processes and Ray actors can import it too."""

    def __init__(
        self,
        dimension: int = 16,
        name: str = "hash-encoder",
        poison: Sequence[str] = (),
        nan: Sequence[str] = (),
    ) -> None:
        super().__init__(dimension, name)
        self.poison, self.nan = tuple(poison), tuple(nan)

    def __reduce__(self) -> tuple[type[FailingEncoder], tuple[int, str, tuple[str, ...], tuple[str, ...]]]:  # type: ignore[override]
        return type(self), (self.dimension, self.name, self.poison, self.nan)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if any(text in self.poison for text in texts):
            raise RuntimeError("encoder exploded")
        vectors = super().encode(texts)
        vectors[[text in self.nan for text in texts]] = np.nan
        return vectors
