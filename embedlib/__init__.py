"""embedlib: turn PostgreSQL tables of text into pgvector embeddings.

Example::

    from embedlib import Ingestor

    report = Ingestor(table="sentences").run()
"""

from embedlib.config import DEFAULT_MODEL, Settings
from embedlib.encoder import Encoder
from embedlib.errors import ConfigError, DatabaseError, EmbedlibError, ModelError, SchemaError
from embedlib.executors import (
    EXECUTORS,
    Executor,
    PipelinedExecutor,
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    ThreadedExecutor,
    make_executor,
)
from embedlib.ingestor import Ingestor
from embedlib.metrics import IngestReport

__version__ = "0.1.0"

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
