"""embedlib: turn PostgreSQL tables of text into pgvector embeddings.

Example::

    from embedlib import Ingestor

    report = Ingestor(table="sentences").run()

The names below are imported when first used, so that ``import embedlib.x``
(a worker process, the command line) does not pay for torch and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "embedlib.options",
    "Settings": "embedlib.options",
    "ConfigError": "embedlib.errors",
    "DatabaseError": "embedlib.errors",
    "EmbedlibError": "embedlib.errors",
    "ModelError": "embedlib.errors",
    "SchemaError": "embedlib.errors",
    "Encoder": "embedlib.encode.base",
    "EXECUTORS": "embedlib.run.executors",
    "Executor": "embedlib.run.executors",
    "PipelinedExecutor": "embedlib.run.executors",
    "ProcessExecutor": "embedlib.run.executors",
    "RayExecutor": "embedlib.run.executors",
    "SerialExecutor": "embedlib.run.executors",
    "ThreadedExecutor": "embedlib.run.executors",
    "make_executor": "embedlib.run.executors",
    "Ingestor": "embedlib.run.ingestor",
    "IngestReport": "embedlib.run.report",
}

__all__ = [
    "DEFAULT_MODEL",
    "EXECUTORS",
    "ConfigError",
    "DatabaseError",
    "EmbedlibError",
    "Encoder",
    "Executor",
    "IngestReport",
    "Ingestor",
    "ModelError",
    "PipelinedExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "SchemaError",
    "SerialExecutor",
    "Settings",
    "ThreadedExecutor",
    "make_executor",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from embedlib.encode.base import Encoder
    from embedlib.errors import ConfigError, DatabaseError, EmbedlibError, ModelError, SchemaError
    from embedlib.options import DEFAULT_MODEL, Settings
    from embedlib.run.executors import (
        EXECUTORS,
        Executor,
        PipelinedExecutor,
        ProcessExecutor,
        RayExecutor,
        SerialExecutor,
        ThreadedExecutor,
        make_executor,
    )
    from embedlib.run.ingestor import Ingestor
    from embedlib.run.report import IngestReport
