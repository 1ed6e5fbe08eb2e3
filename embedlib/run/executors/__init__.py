"""Interchangeable strategies for moving items through two steps (see ``base``)."""

from __future__ import annotations

from typing import Any

from embedlib.errors import ConfigError
from embedlib.options import AUTO
from embedlib.run.executors.base import Executor, ExecutorStats, Stages, Step
from embedlib.run.executors.inline import SerialExecutor
from embedlib.run.executors.pipeline import PipelinedExecutor
from embedlib.run.executors.processes import ProcessExecutor
from embedlib.run.executors.ray import RayExecutor
from embedlib.run.executors.threads import AUTOSCALE_MAX_WORKERS, ThreadedExecutor

EXECUTORS: dict[str, type[Executor]] = {
    SerialExecutor.name: SerialExecutor,
    PipelinedExecutor.name: PipelinedExecutor,
    ProcessExecutor.name: ProcessExecutor,
    RayExecutor.name: RayExecutor,  # needs the optional extra embedlib[ray]
    ThreadedExecutor.name: ThreadedExecutor,
}


# The default: on a CPU the model is the bottleneck and torch already uses every
# core in one encode, so one encoder with reading and writing overlapped around
# it is the fastest correct way (see docs/performance.md#executors). With an
# encoder whose calls can overlap (a remote service) it runs one encoder
# thread per worker, so that many requests are in flight.
AUTO_EXECUTOR = PipelinedExecutor


def make_executor(
    name: str,
    workers: int | None = None,
    *,
    concurrent_encoder: bool = False,
    autoscale: bool = False,
    ray_address: str | None = None,
    device: str = AUTO,
) -> Executor:
    """An executor by name: one of ``EXECUTORS``, or ``"auto"`` (see ``AUTO_EXECUTOR``).

    ``workers`` is what each executor runs in parallel (writer threads,
    threads or processes); None means that executor's default. With
    ``autoscale``, ``workers`` is the most the threaded executor may use
    (see ``run.autoscale``); other executors do not scale. ``ray_address`` is the Ray executor's cluster;
    ``device`` where its actors run the model: ``cpu``, or on the cluster's GPUs where it has them.
    """
    if name == AUTO:
        name = (ThreadedExecutor if autoscale else AUTO_EXECUTOR).name
    try:
        cls = EXECUTORS[name]
    except KeyError:
        choices = ", ".join([AUTO, *EXECUTORS])
        raise ConfigError(f"unknown executor {name!r} (choose from: {choices})", option="executor") from None
    options: dict[str, Any] = {}
    if autoscale:
        if cls is not ThreadedExecutor:
            raise ConfigError(f"autoscale works with the threaded executor, not {name!r}", option="autoscale")
        workers = AUTOSCALE_MAX_WORKERS if workers is None else workers
        options["autoscale"] = True
    elif cls is PipelinedExecutor:
        options["concurrent_compute"] = concurrent_encoder
    elif cls is RayExecutor:
        options["address"] = ray_address
        options["num_gpus"] = 0.0 if device == "cpu" else None
    return cls(**options) if workers is None else cls(workers, **options)


__all__ = [
    "AUTO",
    "EXECUTORS",
    "Executor",
    "ExecutorStats",
    "PipelinedExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "SerialExecutor",
    "Stages",
    "Step",
    "ThreadedExecutor",
    "make_executor",
]
