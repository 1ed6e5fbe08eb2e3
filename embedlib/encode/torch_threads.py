"""Capping the threads torch computes on, now or when it is imported later: light to import, so
that a process or an actor can cap torch before it loads a model."""

from __future__ import annotations

import os
import sys


def limit_torch_threads(threads: int) -> None:
    """Cap the threads torch computes on in this process, now or when it is imported later."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
