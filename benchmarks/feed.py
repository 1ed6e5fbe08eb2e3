"""The path around the model: ``python -m benchmarks.feed [--rows N] [--rounds N]``.

With a model whose forward costs almost nothing (a BERT of 1 layer, 32
wide, random weights, the default model's tokenizer: ``models.tiny``),
what is left is everything around the model: reading, hashing, planning,
tokenizing, writing. That is what a GPU or any fast model leaves
embedlib with. On the same rows (distinct real sentences), side by side,
in turns, each contender's best round:

- that model's ``SentenceTransformer.encode`` (batch size 1,000);
- the tokenizer alone, as ``encode`` calls it (the model's ``preprocess``:
  padded tensors), batches of 1,000;
- the tokenizer's own batch call alone (``tokenizers``, ids only, no
  tensors): the fastest way to tokenize, and a floor for anything that does;
- a raw binary COPY of the same rows into a table shaped like the target,
  payloads built beforehand: the database's own ceiling;
- embedlib end to end (read, plan, encode, write), default executor, batch
  size 1,000, from an empty target.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import models, workloads
from benchmarks.dbpath import raw_copy, raw_payloads
from benchmarks.measure import Database, Result, Timed, ingest_once, side_by_side, timed
from embedlib.cli import positive_int
from embedlib.encode.packing import preprocessor
from embedlib.options import DEFAULT_MODEL
from embedlib.testing import HashEncoder

ROWS = 50_000
BATCH_SIZE = 1000
ENCODE = "SentenceTransformer.encode"
TOKENIZER = "the tokenizer alone (preprocess)"
RUST_TOKENIZER = "the tokenizer's batch call alone (ids only)"
RAW_COPY = "raw binary COPY of the same rows"
EMBEDLIB = "embedlib (default executor)"


def in_batches(run: Callable[[list[str]], Any], texts: Sequence[str]) -> Timed:
    return timed(lambda: [run(list(texts[start : start + BATCH_SIZE])) for start in range(0, len(texts), BATCH_SIZE)])


def contenders(db: Database, table: str, texts: list[str], model_path: str) -> dict[str, Callable[[], Timed]]:
    """What ``feed`` compares, on ``table`` holding ``texts``."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    model = SentenceTransformer(model_path, device="cpu")
    backend = Tokenizer.from_str(model.tokenizer._tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    ingest_once(db, table, model=model_path, batch_size=BATCH_SIZE)  # the target the raw COPY's table copies
    dimension = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)()
    payloads = raw_payloads(texts, HashEncoder(int(dimension)))
    return {
        ENCODE: lambda: timed(lambda: model.encode(texts, batch_size=BATCH_SIZE)),
        TOKENIZER: lambda: in_batches(preprocessor(model), texts),
        RUST_TOKENIZER: lambda: in_batches(backend.encode_batch_fast, texts),
        RAW_COPY: lambda: timed(lambda: raw_copy(db, f"{table}_embeddings", payloads)),
        EMBEDLIB: lambda: ingest_once(db, table, model=model_path, batch_size=BATCH_SIZE),
    }


def table_of(results: list[Result]) -> str:
    by_name = {r.name: r for r in results}
    encode, tokenizer = by_name[ENCODE].rows_per_s, by_name[TOKENIZER].rows_per_s
    lines = [
        f"\nthe path around the model: a 1-layer, 32-wide BERT (random weights, {DEFAULT_MODEL}'s "
        f"tokenizer), {results[0].rows:,} distinct sentences, batch size {BATCH_SIZE:,}, best of "
        f"{len(results[0].seconds)} rounds in turns\n",
        f"| | rows/s | x {ENCODE} | x {TOKENIZER} |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.rows_per_s:,.0f} | {r.rows_per_s / encode:.2f} | {r.rows_per_s / tokenizer:.2f} |"
        )
    return "\n".join(lines)


def run(rows: int = ROWS, rounds: int = 3) -> list[Result]:
    texts = workloads.numbered(rows)
    db = Database()
    try:
        table = db.load(texts)
        return side_by_side(contenders(db, table, texts, models.tiny()), rows=len(texts), rounds=rounds)
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=positive_int, default=ROWS)
    parser.add_argument("--rounds", type=positive_int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    print(table_of(run(args.rows, args.rounds)), flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
