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

from embedlib.encode.device import call_tokens, resolve_device, torch_dtype
from embedlib.encode.packing import PROBE_TEXTS, PackedForward, inner_model, preprocessor
from embedlib.encode.tokens import FastTokenizer, TokenIds
from embedlib.errors import ModelError, one_line
from embedlib.redaction import get_logger, redact

log = get_logger(__name__)

# When the packed forward pays: per padding token it saves the linear layers' work (~width^2
# multiply-adds), and per real token it costs a gather and a scatter (~width moves), so it pays
# from a share of padding that shrinks as the model widens: padding share x width >= this. The
# default model (384 wide) gains 3% at 5.7% padding; a 32-wide one loses at 10%.
PACK_FROM_PADDING_X_WIDTH = 8.0


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
        self.device = str(model.device.type)
        # The packed forward saves the CPU the work on padding; a GPU computes padding at no
        # extra time where batches are sorted by length, and prefers regular shapes.
        self._packed = PackedForward.for_model(model) if self.device == "cpu" else None
        dimension = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        self.dimension = int(dimension or model.get_sentence_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        width = getattr(getattr(inner_model(model), "config", None), "hidden_size", None) or self.dimension
        self.call_tokens = call_tokens(int(width), self.device)  # the token budget of a call by default
        self._pack_from = PACK_FROM_PADDING_X_WIDTH / int(width)  # the least share of padding worth packing
        # Texts to the ids the model runs on (see ``tokens``), or None where the model tokenizes
        # in a way FastTokenizer does not reproduce: then every call goes through ``preprocess``.
        self.tokenize: FastTokenizer | None = None
        self._extra_features: dict[str, Any] = {}  # what preprocess adds beside the tensors
        self._pad_id = 0
        self._token_types = False
        self._set_up_fast_tokenizer()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (a batch the planner already sorted by tokens), one forward pass."""
        if self.tokenize is not None and not self._prompted:
            return self.encode_tokens(self.tokenize(texts))
        with self._lock:
            if self._prompted:
                vectors = self._model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True)
                return np.asarray(vectors, dtype=np.float32)
            return self._forward(preprocessor(self._model)(list(texts)))

    def encode_tokens(self, tokens: TokenIds) -> np.ndarray:
        """Vectors of texts tokenized already by ``tokenize``: one forward pass over their ids."""
        with self._lock:
            return self._forward(self._features(tokens))

    def _forward(self, features: dict[str, Any]) -> np.ndarray:
        """``preprocess`` + ``forward`` is what ``SentenceTransformer.encode`` does per batch,
        without its per-call sorting and conversions: the same vectors, in less time
        (docs/performance.md has the figures). For a BERT-style model the forward skips the
        padding (``packing``)."""
        import torch

        device = self._model.device
        features = {
            key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in features.items()
        }
        with torch.inference_mode():
            if self._packed is not None and _padding_share(features["attention_mask"]) >= self._pack_from:
                embeddings = self._packed(features)
            else:
                embeddings = self._model.forward(features)["sentence_embedding"]
        return embeddings.float().cpu().numpy()

    @property
    def _prompted(self) -> bool:
        # A model with a default prompt goes through ``encode``, which adds the prompt.
        return bool(getattr(self._model, "default_prompt_name", None))

    def _features(self, tokens: TokenIds) -> dict[str, Any]:
        import torch

        ids, mask = tokens.padded(self._pad_id)
        features: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])  # one sequence: all type 0
        return {**features, **self._extra_features}

    def _set_up_fast_tokenizer(self) -> None:
        """Use ``FastTokenizer`` if the model has a fast tokenizer and, on probe texts, it gives
        features equal to the model's own ``preprocess``."""
        import torch

        backend = getattr(self._model.tokenizer, "_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch_fast") or self._prompted:
            return
        if getattr(self._model.tokenizer, "truncation_side", "right") != "right":
            return  # FastTokenizer cuts on the right, as the window is filled from the start
        past_the_window = "long " * (self.max_tokens + 10)
        texts = [*PROBE_TEXTS, past_the_window, "  Spaces AROUND, Ünïcode and 中文 ", "\ttab\nnewline"]
        try:
            tokenizer = FastTokenizer(backend, self.max_tokens)
            expected = dict(preprocessor(self._model)(texts))
            self._pad_id = int(self._model.tokenizer.pad_token_id or 0)
            self._token_types = "token_type_ids" in expected
            self._extra_features = {k: v for k, v in expected.items() if not isinstance(v, torch.Tensor)}
            made = self._features(tokenizer(texts))
        except Exception as exc:  # a tokenizer of another kind: preprocess it is
            log.debug("fast tokenizer not used: %s: %s", type(exc).__name__, exc)
            return
        same = made.keys() == expected.keys() and all(
            torch.equal(made[k], expected[k]) if isinstance(expected[k], torch.Tensor) else made[k] == expected[k]
            for k in expected
        )
        if same:
            self.tokenize = tokenizer
        else:
            log.debug("fast tokenizer not used: its features differ from the model's preprocess")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text including special tokens, before truncation.

        Counted with a copy of the tokenizer under a lock of its own, so that
        counting (the planner's work) runs while another thread encodes.
        """
        if self.tokenize is not None:
            return self.tokenize.count(texts)
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


def load_sentence_transformer(
    name: str, path: str | None, fingerprint: str, device: str = "auto", precision: str = "fp32"
) -> SentenceTransformerEncoder:
    """The model ``name`` from the directory ``path`` (None: the Hugging Face cache), whose files
    have ``fingerprint`` (part of the cache key only), on ``device`` in ``precision`` (see
    ``device``), loaded once per process for each."""
    resolved = resolve_device(device)
    torch_dtype(precision, resolved)  # a combination refused is refused before loading anything
    return _load(name, path, fingerprint, resolved, precision)


@functools.cache
def _load(name: str, path: str | None, fingerprint: str, device: str, precision: str) -> SentenceTransformerEncoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # TOKENIZERS_PARALLELISM is left as the user set it: unset, the tokenizer uses every core and
    # turns that off by itself in a child forked after it ran (embedlib's own workers are spawned).
    _quiet_transformers()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path or name, device=device).eval()  # forward is called directly
        if precision != "fp32":
            model = model.to(torch_dtype(precision, device))
    except Exception as exc:  # hub, OS and config errors all mean "cannot load this model"
        where = f"directory {path!r}" if path else "a local directory or the hugging face cache"
        raise ModelError(
            f"cannot load model {name!r} from {where}: {type(exc).__name__}: {redact(one_line(exc))}; "
            "embedlib works offline, so pass a local model directory or a cached model name"
        ) from None
    return SentenceTransformerEncoder(name, model)


def _padding_share(attention_mask: Any) -> float:
    return 1.0 - float(attention_mask.sum()) / max(1, attention_mask.numel())


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
