"""Interchangeable strategies for moving batches through workers."""

from __future__ import annotations

from embedlib.errors import ConfigError
from embedlib.executors.base import Executor, Worker, WorkerFactory
from embedlib.executors.pipelined import PipelinedExecutor
from embedlib.executors.process import ProcessExecutor
from embedlib.executors.serial import SerialExecutor
from embedlib.executors.threaded import ThreadedExecutor

EXECUTORS: dict[str, type[Executor]] = {
    SerialExecutor.name: SerialExecutor,
    PipelinedExecutor.name: PipelinedExecutor,
    ProcessExecutor.name: ProcessExecutor,
    ThreadedExecutor.name: ThreadedExecutor,
}


AUTO = "auto"


def make_executor(name: str, workers: int = 1) -> Executor:
    """An executor by name: one of ``EXECUTORS``, or ``"auto"``.

    ``auto`` runs serially for one worker and on threads for more, so that
    ``--workers 4`` alone does what the original script's flag did.
    """
    if name == AUTO:
        name = SerialExecutor.name if workers == 1 else ThreadedExecutor.name
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"unknown executor {name!r} (choose from: {', '.join([AUTO, *EXECUTORS])})") from None
    return cls(workers)


__all__ = [
    "AUTO",
    "EXECUTORS",
    "Executor",
    "PipelinedExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "ThreadedExecutor",
    "Worker",
    "WorkerFactory",
    "make_executor",
]
