"""A padding-free forward pass for BERT-style sentence-transformers models.

Even batches of similar length carry padding. Most of the model's time is in
its linear layers, which already run at the CPU's peak, so the only way to make
them faster is to give them fewer rows. Here every linear layer, layer norm and
activation runs on the real tokens of the batch only, packed one after another;
attention, which needs the ``[batch, heads, length, length]`` layout, runs on
the padded batch as before. The vectors are the model's own
(``benchmarks/packing.py`` measures both; docs/performance.md has the figures).

Only used for a model whose modules have the shape this code knows (BERT's:
``embeddings``, ``encoder.layer[i].attention.self.query`` ...), with absolute
positions and no decoder, and only after it reproduced the standard forward on
a probe batch when the model was loaded. Anything else takes the standard
forward, so a model this code does not know is slower, never wrong. The probe
costs 0.4 s once per process, beside 5.9 s for importing and loading the
model here.
"""

from __future__ import annotations

from typing import Any

from embedlib.redaction import get_logger

log = get_logger(__name__)

# Short, long and past the model's limit: a call mostly of padding, with truncation. The longest alone is
# probed too: a call without padding takes another path through attention.
PROBE_TEXTS = ("a", "two words", "a sentence of a few more words than the others", "long " * 300)


class PackedForward:
    """``features -> sentence embeddings`` for a BERT-style model, without computing on padding."""

    def __init__(self, model: Any, bert: Any) -> None:
        import torch

        self._bert = bert
        self._after_transformer = list(model)[1:]  # pooling, normalisation, dense layers: they see padded tokens
        self._hidden = int(bert.config.hidden_size)
        # query, key and value as one matrix: one matrix product per layer instead of three. A copy: embedlib
        # never trains the model it holds, so the weights cannot change under it.
        projections = [(a.query, a.key, a.value) for a in (layer.attention.self for layer in bert.encoder.layer)]
        self._qkv = [(torch.cat([p.weight for p in qkv]), torch.cat([p.bias for p in qkv])) for qkv in projections]

    @classmethod
    def for_model(cls, model: Any) -> PackedForward | None:
        """A packed forward for ``model`` if it has BERT's shape and agrees with the standard forward, else None."""
        bert = _bert_of(model)
        if bert is None:
            return None
        try:
            packed = cls(model, bert)
            agrees = packed._agrees_with(model)
        except Exception as exc:  # a module with a different inner layout: the standard forward it is
            log.debug("packed forward not used: %s: %s", type(exc).__name__, exc)
            return None
        if not agrees:
            log.debug("packed forward not used: its vectors differ from the standard forward's")
            return None
        return packed

    def __call__(self, features: dict[str, Any]) -> Any:
        import torch
        import torch.nn.functional as F

        input_ids, attention_mask = features["input_ids"], features["attention_mask"]
        batch, length = input_ids.shape
        hidden = self._hidden
        embedded = self._bert.embeddings(input_ids=input_ids, token_type_ids=features.get("token_type_ids"))
        real = attention_mask.reshape(-1).nonzero().squeeze(1)  # positions of real tokens in the padded batch
        states = embedded.reshape(batch * length, hidden).index_select(0, real)
        # Without padding the mask is skipped: same result, and SDPA is faster without one.
        keep = None if real.numel() == batch * length else attention_mask.bool()[:, None, None, :]

        def padded(packed: torch.Tensor) -> torch.Tensor:
            out = packed.new_zeros(batch * length, packed.shape[1])
            return out.index_copy_(0, real, packed)

        for layer, (qkv_weight, qkv_bias) in zip(self._bert.encoder.layer, self._qkv, strict=True):
            attention = layer.attention.self
            heads, head_size = attention.num_attention_heads, attention.attention_head_size
            qkv = padded(F.linear(states, qkv_weight, qkv_bias))
            query, key, value = qkv.view(batch, length, 3, heads, head_size).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=attention.scaling)
            context = context.transpose(1, 2).reshape(batch * length, hidden).index_select(0, real)
            states = layer.attention.output(context, states)  # dense, residual, layer norm
            states = layer.output(layer.intermediate(states), states)  # feed-forward, residual, layer norm
        out = dict(features, token_embeddings=padded(states).view(batch, length, hidden))
        for module in self._after_transformer:
            out = module(out)
        return out["sentence_embedding"]

    def _agrees_with(self, model: Any) -> bool:
        import torch

        for texts in (list(PROBE_TEXTS), [PROBE_TEXTS[-1]]):
            features = dict(preprocessor(model)(texts))
            with torch.inference_mode():
                standard = model.forward(dict(features))["sentence_embedding"]
                packed = self(features)
            # Often bit-identical; another BLAS may block a product of fewer rows differently, so allow
            # float32 rounding, far below what any similarity search could notice.
            if not torch.allclose(standard, packed, rtol=1e-4, atol=1e-5):
                return False
        return True


def preprocessor(model: Any) -> Any:
    """The model's ``texts -> features`` (tokenizer) method."""
    return getattr(model, "preprocess", None) or model.tokenize  # renamed to preprocess in sentence-transformers 6


def inner_model(model: Any) -> Any:
    """The transformers model inside a sentence-transformers model (its first module's), or None."""
    try:
        modules = list(model)
    except TypeError:
        return None
    if not modules:
        return None
    return getattr(modules[0], "model", None) or getattr(modules[0], "auto_model", None)  # "model" since 6


def _bert_of(model: Any) -> Any:
    """The BERT-style module inside a sentence-transformers model, or None for any other shape."""
    bert = inner_model(model)
    config = getattr(bert, "config", None)
    if bert is None or config is None or bert.training or not hasattr(bert, "embeddings"):
        return None
    if not hasattr(getattr(bert, "encoder", None), "layer"):
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None  # relative positions live inside attention, which this forward replaces
    if getattr(config, "chunk_size_feed_forward", 0):
        return None
    return bert
