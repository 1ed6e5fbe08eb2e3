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


# The default: on a CPU the model is the bottleneck and torch already uses every
# core in one encode, so one encoder with reading and writing overlapped around
# it is the fastest correct way here (see the README's measurements).
AUTO = "auto"
AUTO_EXECUTOR = PipelinedExecutor


def make_executor(name: str, workers: int | None = None) -> Executor:
    """An executor by name: one of ``EXECUTORS``, or ``"auto"`` (the pipelined executor).

    ``workers`` is what each executor runs in parallel (writer threads,
    threads or processes); None means that executor's default.
    """
    if name == AUTO:
        name = AUTO_EXECUTOR.name
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"unknown executor {name!r} (choose from: {', '.join([AUTO, *EXECUTORS])})") from None
    return cls() if workers is None else cls(workers)


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
