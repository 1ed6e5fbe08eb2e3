"""The texts the benchmarks run on, all built from real sentences.

``../shared/data/debian_descriptions.txt`` (62,511 Debian package
descriptions, ~48 characters) when it is beside the checkout, or
``$EMBEDLIB_BENCH_TEXT``; otherwise the 2,000 sentences shipped with embedlib.
Every builder is deterministic (fixed seeds), so runs compare like with like.
"""

from __future__ import annotations

import os
import random
from functools import cache
from pathlib import Path

from embedlib.source.loader import sample_lines

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian_descriptions.txt"


@cache
def sentences() -> tuple[str, ...]:
    """Distinct real sentences, in file order."""
    configured = os.environ.get("EMBEDLIB_BENCH_TEXT")
    path = Path(configured) if configured else SHARED_TEXT
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else sample_lines()
    return tuple(dict.fromkeys(line.strip() for line in lines if line.strip()))


def short_distinct(n: int) -> list[str]:
    """``n`` distinct short sentences (~48 characters)."""
    return list(sentences()[:n])


def mixed_length(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct documents of 1 to 40 sentences, lengths log-uniform, in random order.

    Like a table of comments or descriptions: most rows short, a long tail
    up to past the model's 256-token limit (~50 to ~2,000 characters).
    """
    pool = sentences()
    rng = random.Random(seed)
    texts: list[str] = []
    start = 0
    for _ in range(n):
        count = round(2 ** rng.uniform(0, 5.32))  # 1 .. 40
        texts.append(" ".join(pool[(start + k) % len(pool)] for k in range(count)))
        start += count
    return texts


def half_duplicated(n: int, seed: int = 11) -> list[str]:
    """``n`` rows holding ``n / 2`` distinct sentences, each twice, shuffled."""
    distinct = short_distinct(n // 2)
    rows = distinct + distinct + short_distinct(n // 2 + n % 2)[n // 2 :]
    random.Random(seed).shuffle(rows)
    return rows


def numbered(n: int) -> list[str]:
    """``n`` distinct texts for database-path runs at any scale: sentences, numbered past the first pass."""
    pool = sentences()
    return [pool[i % len(pool)] + (f" ({i // len(pool)})" if i >= len(pool) else "") for i in range(n)]
