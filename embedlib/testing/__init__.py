"""Tooling for tests, benchmarks and ``embedlib bench``: not part of the ingest path.

- ``encoders``: fast deterministic stand-in encoders (``HashEncoder``, ``FailingEncoder``);
- ``service``: a local OpenAI-compatible embeddings service with a set latency
  (``python -m embedlib.testing.service``);
- ``proxy``: a TCP proxy in front of PostgreSQL that adds latency or cuts
  connections (``python -m embedlib.testing.proxy``).

They live in the package, not in tests/, because child processes, Ray actors
and ``embedlib bench`` import them.
"""

from embedlib.testing.encoders import FailingEncoder, HashEncoder

__all__ = ["FailingEncoder", "HashEncoder"]
