"""The model on a GPU: ``python -m benchmarks.gpu`` (``benchmarks/gpu_check.sh`` runs it on a CUDA machine).

all-MiniLM-L6-v2's shape and tokenizer with random weights (``models.minilm_shape``:
the cost of the real model, without its weights to carry), on sentences built from
the bundled sample, in each precision and batch size, side by side:

- ``SentenceTransformer.encode`` of the texts, on the device, in that precision;
- embedlib end to end on the embedded database (read, plan, tokenize, encode,
  write), ``--device``, ``--precision``, that batch size, from an empty target.

Each figure is the best of ``--rounds`` (after one warm-up of each), in turns.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import models, workloads
from benchmarks.measure import Database, Result, ingest_once, side_by_side, timed
from embedlib.cli import positive_int
from embedlib.options import PRECISIONS

ROWS = 100_000
BATCH_SIZES = (64, 256, 1024)


def measure(device: str, precisions: list[str], batch_sizes: list[int], rows: int, rounds: int) -> list[str]:
    import torch
    from sentence_transformers import SentenceTransformer

    texts = workloads.numbered(rows)
    path = models.minilm_shape()
    db = Database()
    lines = [
        f"\nall-MiniLM-L6-v2's shape, random weights, {rows:,} sentences, device {device}, best of {rounds}\n",
        "| precision | batch size | SentenceTransformer.encode rows/s | embedlib end to end rows/s | x encode |",
        "|---|---:|---:|---:|---:|",
    ]
    try:
        table = db.load(texts)
        for precision in precisions:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            model = SentenceTransformer(path, device=device).to(dtype)
            for batch_size in batch_sizes:
                options = {"model": path, "device": device, "precision": precision, "batch_size": batch_size}
                contenders = {
                    "encode": lambda m=model, b=batch_size: timed(lambda: m.encode(texts, batch_size=b)),
                    "embedlib": lambda o=options: ingest_once(db, table, **o),
                }
                side_by_side(contenders, rows=len(texts), rounds=1)  # warm-up: kernels, the model loaded
                results: dict[str, Result] = {
                    r.name: r for r in side_by_side(contenders, rows=len(texts), rounds=rounds)
                }
                encode, embedlib = results["encode"].rows_per_s, results["embedlib"].rows_per_s
                lines.append(
                    f"| {precision} | {batch_size:,} | {encode:,.0f} | {embedlib:,.0f} | {embedlib / encode:.2f} |"
                )
                print(lines[-1], flush=True)
    finally:
        db.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=positive_int, default=ROWS)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["fp32", "fp16"])
    parser.add_argument("--batch-sizes", nargs="+", type=positive_int, default=list(BATCH_SIZES))
    args = parser.parse_args()
    started = time.perf_counter()
    lines = measure(args.device, args.precisions, args.batch_sizes, args.rows, args.rounds)
    print("\n".join(lines), flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
