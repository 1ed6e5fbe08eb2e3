"""The default encoder: a sentence-transformers model on this machine, loaded once per process."""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedlib.encode.packing import PackedForward, preprocessor
from embedlib.errors import ModelError, one_line
from embedlib.redaction import redact


class SentenceTransformerEncoder:
    """A sentence-transformers model shared by every thread of a process.

    One lock guards the model. Two reasons: the fast tokenizer is not
    re-entrant (concurrent calls raise ``RuntimeError: Already borrowed``),
    and torch already spreads one ``encode`` call over all cores, so
    concurrent calls only oversubscribe them (docs/performance.md#executors).
    Threads gain by overlapping database work with encoding, not encoding
    with encoding.
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
        vectors, in less time (docs/performance.md has the figures). For a
        BERT-style model the forward skips the padding (``packing``). A model
        with a default prompt goes through ``encode``, which adds the prompt.
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


def load_sentence_transformer(name: str, path: str | None, fingerprint: str) -> SentenceTransformerEncoder:
    """The model ``name`` from the directory ``path`` (None: the Hugging Face cache), whose files
    have ``fingerprint`` (part of the cache key only), on this process's device: ``EMBEDLIB_DEVICE``
    (set in a Ray actor given a GPU), else the CPU."""
    return _load(name, path, fingerprint, os.environ.get("EMBEDLIB_DEVICE") or "cpu")


@functools.cache
def _load(name: str, path: str | None, fingerprint: str, device: str) -> SentenceTransformerEncoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from workers
    _quiet_transformers()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path or name, device=device).eval()  # forward is called directly
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
