"""Interchangeable strategies for moving batches through workers."""

from __future__ import annotations

from embedlib.errors import ConfigError
from embedlib.executors.base import Executor, Worker, WorkerFactory
from embedlib.executors.serial import SerialExecutor
from embedlib.executors.threaded import ThreadedExecutor

EXECUTORS: dict[str, type[Executor]] = {
    SerialExecutor.name: SerialExecutor,
    ThreadedExecutor.name: ThreadedExecutor,
}


def make_executor(name: str, workers: int = 1) -> Executor:
    """An executor by name: one of ``EXECUTORS``."""
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"unknown executor {name!r} (choose from: {', '.join(EXECUTORS)})") from None
    return cls(workers)


__all__ = ["EXECUTORS", "Executor", "SerialExecutor", "ThreadedExecutor", "Worker", "WorkerFactory", "make_executor"]
