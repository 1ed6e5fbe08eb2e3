"""The model's standard forward against embedlib's padding-free one.

``python -m benchmarks.packing [TEXTS] [--rounds N]``.

Both encode the same calls, cut the way an ingest cuts them (sorted by
tokens, ``DEFAULT_BATCH_TOKENS`` per call), from TEXTS (default 400) distinct
mixed-length texts, in turns, round after round; each one's best round
counts. Prints a markdown table with the share of padding in those calls and
the largest difference between the two forwards' vectors.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import workloads
from embedlib.cli import positive_int
from embedlib.encode.base import resolve_encoder
from embedlib.encode.packing import preprocessor
from embedlib.options import default
from embedlib.plan.batching import budget_slices, encode_cost

DEFAULT_BATCH_TOKENS = default("batch_tokens")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts", type=positive_int, nargs="?", default=400)
    parser.add_argument("--rounds", type=positive_int, default=3)
    args = parser.parse_args()
    import torch

    encoder = resolve_encoder("all-MiniLM-L6-v2")
    model, packed = encoder._model, encoder._packed  # type: ignore[attr-defined]
    if packed is None:
        raise SystemExit("the packed forward does not apply to this model")
    texts = workloads.mixed_length(args.texts)
    counts = encoder.count_tokens(texts)  # type: ignore[attr-defined]
    costs = [encode_cost(t, c, encoder.max_tokens) for t, c in zip(texts, counts, strict=True)]  # type: ignore[attr-defined]
    ordered = sorted(range(len(texts)), key=lambda i: costs[i])
    slices = budget_slices([costs[i] for i in ordered], DEFAULT_BATCH_TOKENS)
    calls = [preprocessor(model)([texts[i] for i in ordered[s]]) for s in slices]
    forwards: dict[str, Callable[[dict[str, Any]], Any]] = {
        "standard forward": lambda features: model.forward(dict(features))["sentence_embedding"],
        "packed forward": lambda features: packed(dict(features)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    vectors: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for forward in forwards.values():  # warm-up
            forward(calls[0])
        for _ in range(args.rounds):
            for name, forward in forwards.items():
                started = time.perf_counter()
                vectors[name] = np.concatenate([forward(features).numpy() for features in calls])
                seconds[name].append(time.perf_counter() - started)
    real = sum(int(features["attention_mask"].sum()) for features in calls)
    padded = sum(features["attention_mask"].numel() for features in calls)
    standard = min(seconds["standard forward"])
    print(
        f"\n{len(texts)} distinct mixed-length texts in {len(calls)} calls of at most {DEFAULT_BATCH_TOKENS} "
        f"tokens: {real:,} real tokens, {padded:,} with padding ({1 - real / padded:.1%} padding); "
        f"best of {args.rounds} rounds\n"
    )
    print("| | best s | texts/s | x standard |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        print(f"| {name} | {min(times):.2f} | {len(texts) / min(times):,.1f} | {standard / min(times):.3f} |")
    difference = float(np.abs(vectors["standard forward"] - vectors["packed forward"]).max())
    print(f"\nlargest difference between the two forwards' vectors: {difference:.3g}")


if __name__ == "__main__":
    main()
