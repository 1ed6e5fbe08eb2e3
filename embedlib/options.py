"""Settings for one ingest run: a single frozen dataclass, readable from the environment."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from embedlib.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_BATCH_TOKENS = 2048
DEFAULT_MAX_ATTEMPTS = 3  # runs that try a text the model fails on, before it is left out

# Environment variables, highest priority first where several mean the same thing.
DSN_ENV_VARS = ("EMBEDLIB_DSN", "DATABASE_URL")
WORKERS_ENV_VAR = "EMBED_WORKERS"  # the name the original script used

# How vectors are stored (--dtype): pgvector's ``vector`` holds float32, 4
# bytes per dimension; ``halfvec`` holds float16, 2 (docs/performance.md#halfvec
# has what it costs in recall). A target keeps the type it was created with.
VECTOR_TYPES = {"float": "vector", "half": "halfvec"}
DTYPES = tuple(VECTOR_TYPES)


def env_dsn() -> str | None:
    """The DSN named by the environment, or None for the embedded database."""
    for name in DSN_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def env_workers() -> int | None:
    """``EMBED_WORKERS`` as an int, or None when unset (each executor has its own default)."""
    raw = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        workers = int(raw)
    except ValueError:
        raise ConfigError(f"{WORKERS_ENV_VAR} must be a whole number, got {raw!r}") from None
    return workers


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run. Validated on construction.

    ``model`` is a model name or path, or any object with an ``encode``
    method (see ``encoder.Encoder``); everything else is plain data, so a
    Settings can be pickled to a worker process.
    """

    table: str
    dsn: str | None = None
    text_column: str = "text"
    id_column: str = "id"
    target: str | None = None
    model: Any = DEFAULT_MODEL
    batch_size: int = 100
    executor: str = "serial"
    workers: int = 1
    # Rows read per query. Larger than a batch so that duplicates can be
    # folded and texts sorted by length across several batches.
    window_size: int = 0
    # A cap on tokens per call to the model (texts x longest), 0 for none; see
    # batching.budget_slices. The default was the fastest for short and long texts
    # (docs/performance.md).
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    metrics_only: bool = False
    # How vectors are stored: "float" or "half" (schema.VECTOR_TYPES); None
    # keeps an existing target's type and makes a new one float.
    dtype: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    reconnect_s: float = 60.0  # see db.Session

    def __post_init__(self) -> None:
        for name in ("table", "text_column", "id_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty name, got {value!r}")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise ConfigError(f"target must be a non-empty name, got {self.target!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r} (choose from: {', '.join(DTYPES)})")
        _require_positive("batch_size", self.batch_size)
        _require_positive("workers", self.workers)
        _require_positive("max_attempts", self.max_attempts)
        if self.window_size == 0:
            object.__setattr__(self, "window_size", max(10_000, 10 * self.batch_size))
        _require_positive("window_size", self.window_size)
        if isinstance(self.batch_tokens, bool) or not isinstance(self.batch_tokens, int) or self.batch_tokens < 0:
            raise ConfigError(f"batch_tokens must be a whole number >= 0, got {self.batch_tokens!r}")
        require_amount("reconnect_s", self.reconnect_s, "seconds")

    @property
    def target_table(self) -> str:
        return self.target or f"{self.table}_embeddings"


def is_amount(value: object) -> bool:
    """Whether ``value`` is a finite number >= 0 (seconds, milliseconds): not a bool, NaN or infinity.

    The one check for every such setting, from Python (``require_amount``) and
    from the command line alike. NaN compares false with everything, so a
    plain ``< 0`` test lets it through, and a timeout of NaN or infinity never
    runs out: ``reconnect_s=float("nan")`` retried a lost connection forever.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 if isinstance(value, int) else math.isfinite(value) and value >= 0


def require_amount(name: str, value: object, unit: str) -> None:
    if not is_amount(value):
        raise ConfigError(f"{name} must be a finite number of {unit} >= 0, got {value!r}")


def _require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
