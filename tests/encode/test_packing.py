"""The padding-free forward gives the model's own vectors, and stands aside where it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlib.encode.base import resolve_encoder
from embedlib.encode.local import SentenceTransformerEncoder
from embedlib.encode.packing import PackedForward, preprocessor

pytestmark = pytest.mark.model


def standard_forward(model, texts):  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return model.forward(dict(preprocessor(model)(texts)))["sentence_embedding"].numpy()


def test_the_default_model_encodes_without_padding_and_gets_the_standard_vectors(sample_texts, st_model):
    encoder = resolve_encoder("all-MiniLM-L6-v2")
    assert encoder._packed is not None
    # One call holding a 2-token text beside texts truncated at 256: mostly padding, the packed forward's worst case.
    texts = ["ok", *sample_texts[:20], " ".join(sample_texts[20:80]), " ".join(sample_texts[80:90])]
    packed = encoder.encode(texts)
    np.testing.assert_allclose(packed, standard_forward(st_model, texts), atol=1e-6)
    np.testing.assert_allclose(packed, st_model.encode(texts, batch_size=len(texts)), atol=1e-5)
    alone = texts[-2:-1]  # a call without padding skips the attention mask
    np.testing.assert_allclose(encoder.encode(alone), standard_forward(st_model, alone), atol=1e-6)


def test_a_forward_that_does_not_reproduce_the_model_is_not_used(st_model, monkeypatch):
    original_call = PackedForward.__call__
    monkeypatch.setattr(PackedForward, "__call__", lambda self, features: original_call(self, features) * 1.01)
    assert PackedForward.for_model(st_model) is None
    encoder = SentenceTransformerEncoder("all-MiniLM-L6-v2", st_model)
    assert encoder._packed is None
    texts = ["a short text", "a somewhat longer text than the first one"]
    np.testing.assert_allclose(encoder.encode(texts), standard_forward(st_model, texts), atol=1e-6)


def test_models_of_another_shape_keep_their_own_forward(st_model, monkeypatch):
    assert PackedForward.for_model(object()) is None
    config = st_model[0].model.config
    monkeypatch.setattr(config, "position_embedding_type", "relative_key", raising=False)
    assert PackedForward.for_model(st_model) is None  # relative positions live inside attention
    monkeypatch.undo()
    monkeypatch.setattr(config, "is_decoder", True)
    assert PackedForward.for_model(st_model) is None
