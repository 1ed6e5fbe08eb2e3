"""A fast, deterministic stand-in encoder for tests and database-path benchmarks.

Not a model: vectors come from a hash of the text, so equal texts get equal
vectors and different texts (almost surely) different ones, at millions of
texts per second. Use the real model to test what a model does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class HashEncoder:
    """Unit vectors derived from each text's SHA-256. Picklable, thread-safe."""

    max_tokens = 64  # "tokens" are whitespace-separated words here

    def __init__(self, dimension: int = 16, name: str = "hash-encoder") -> None:
        self.dimension = dimension
        self.name = name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little") for t in texts]
        vectors = np.stack([np.random.default_rng(seed).standard_normal(self.dimension) for seed in seeds])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]
