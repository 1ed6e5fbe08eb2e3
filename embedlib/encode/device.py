"""Where a local model runs and in what arithmetic: ``--device`` and ``--precision``, resolved.

Light to import: torch is imported only when a device is resolved, as a model loads.
"""

from __future__ import annotations

import os
from typing import Any

from embedlib.errors import ConfigError

# Tokens per call to the model (texts x longest) for the default model's width (384) on a CPU: the
# fastest for short and long texts there (docs/performance.md, ``benchmarks.compare model``). Its
# activations then stay in the CPU's caches; a narrower model's take proportionally less room, so
# its calls hold proportionally more tokens.
CPU_CALL_TOKENS = 2048
REFERENCE_WIDTH = 384
# A GPU wants calls large enough to fill it, far past a CPU's caches; its memory is the limit:
# 16 times the CPU's budget (32,768 tokens of the default model) keeps a call's activations to a
# few hundred MB for models up to about 1,024 wide (--batch-tokens lowers it for larger ones).
GPU_CALL_FACTOR = 16


def resolve_device(requested: str) -> str:
    """``cpu``, ``cuda[:N]`` or ``mps`` for ``requested`` (see rules.Device); ``auto``: the
    ``EMBEDLIB_DEVICE`` this process was given (a Ray actor's), else a GPU if torch sees one."""
    import torch

    if requested == "auto":
        requested = os.environ.get("EMBEDLIB_DEVICE") or "auto"
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {requested}: torch sees no CUDA GPU here (is this torch build CUDA-enabled?)",
                option="device",
            )
        number = int(requested.partition(":")[2] or 0)
        if number >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {requested}: torch sees {torch.cuda.device_count()} GPUs here", option="device"
            )
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: torch sees no Apple GPU here", option="device")
    return requested


def torch_dtype(precision: str, device: str) -> Any:
    """The torch dtype of ``precision`` (one of options.PRECISIONS) on ``device``."""
    import torch

    if precision == "fp16" and device == "cpu":
        raise ConfigError("--precision fp16 needs a GPU; on a CPU use fp32 or bf16", option="precision")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def call_tokens(width: int, device: str) -> int:
    """The default token budget of one call to a model ``width`` wide on ``device``."""
    budget = max(CPU_CALL_TOKENS, CPU_CALL_TOKENS * REFERENCE_WIDTH // max(1, width))
    return budget if device == "cpu" else budget * GPU_CALL_FACTOR
