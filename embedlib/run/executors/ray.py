"""Compute on a pool of Ray actors, each loading the model once; read, claim and write in the driver.

    items (read + plan, driver) --> N actors (compute) --> finish threads (driver, COPY)

This is the pipelined executor with its compute threads each driving one
actor: the driver leases spans and claims texts in PostgreSQL exactly as any
ingestor does (see ``source.sharing``), so a Ray run and plain ``embedlib
ingest`` processes share one table, and only the compute step's factory,
items and what it makes of them cross to the actors: never a connection or a
DSN. Actors are started at the first item and kept until ``shutdown()``
(like the process executor's processes: loading a model takes seconds).
Each actor asks for one CPU and, where the cluster has GPUs (and the run's
``--device`` is not ``cpu``), one GPU, or a share of one when there are fewer
GPUs than actors; its model then runs on the GPU (``EMBEDLIB_DEVICE=cuda`` in
the actor). It caps torch at ``cores / workers`` threads on its node.

Without an address it starts (or joins) a local Ray instance in this
process; ``address`` joins a cluster made with ``ray start --head`` on one
machine and ``ray start --address ...`` on the others, each with embedlib
and the model installed. The Ingestor and the command line take the address
from ``ray_address`` (``--ray-address``, else ``$RAY_ADDRESS``). Ray is an
optional extra: ``pip install 'embedlib[ray]'``.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from embedlib.errors import ConfigError
from embedlib.run.executors.base import Stages, Step, T
from embedlib.run.executors.pipeline import PipelinedExecutor
from embedlib.run.executors.ray_cluster import join, ray_module

# How long an actor may take to be placed and to load its model.
ACTOR_START_S = 300.0


class RayExecutor(PipelinedExecutor):
    name = "ray"

    def __init__(
        self, workers: int = 2, *, address: str | None = None, num_gpus: float | None = None, depth: int = 4
    ) -> None:
        """``num_gpus`` each actor asks for; None: a GPU each while the cluster has enough, else a
        share, and none on a cluster without GPUs (its model then runs on the actor's CPU)."""
        super().__init__(workers, depth=depth, concurrent_compute=True)  # one compute thread per actor
        self.address = address or None
        self.num_gpus = num_gpus
        self._actors: list[Any] = []
        self._free: list[Any] = []  # actors not driven by a compute thread in the current run
        self._lock = threading.Lock()

    def map_unordered(self, stages: Stages[T, Any, Any], items: Iterable[T]) -> Iterator[Any]:
        items = iter(items)
        first = next(items, None)
        if first is None:
            return  # nothing to do: no Ray started
        yield from super().map_unordered(stages, itertools.chain([first], items))

    def compute_steps(self, stages: Stages[T, Any, Any]) -> Callable[[], Step[T, Any]]:
        # In the caller's thread, before the stages start: Ray wants to be started from the
        # main thread (started from another, its raylet died mid-run under pytest).
        ray = ray_module()
        with self._lock:
            if not self._actors:
                self._start_actors(ray)
            self._free = list(self._actors)  # a new run: every actor is free again
        factory = ray.put(stages.compute)  # sent once a run, not with every item

        def drive_an_actor() -> Step[T, Any]:
            """Called by a compute thread at its first item."""
            with self._lock:
                actor = self._free.pop()
            try:
                ray.get(actor.start_run.remote(factory), timeout=ACTOR_START_S)
            except ray.exceptions.GetTimeoutError:
                raise ConfigError(
                    f"a Ray actor did not start in {ACTOR_START_S:g} s: does the cluster have "
                    f"the GPUs asked for ({self.num_gpus if self.num_gpus is not None else 'a share'} per worker) "
                    "free, and embedlib installed on every node?"
                ) from None
            return _OnActor(actor)

        return drive_an_actor

    def _start_actors(self, ray: Any) -> None:
        if not ray.is_initialized():
            join(ray, self.address)
        # One CPU each while the cluster has enough, else a share: more actors than CPUs
        # asking for a whole one would wait for each other forever.
        resources = ray.cluster_resources()
        cpus = min(1.0, float(resources.get("CPU", 1)) / self.workers)
        gpus = self.num_gpus
        if gpus is None:  # a GPU each, or an equal share of one: a share must fit on one GPU
            found = int(resources.get("GPU", 0))
            gpus = 1.0 / math.ceil(self.workers / found) if found else 0.0
        actor_class = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ComputeActor)
        torch_threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._actors = [actor_class.remote(torch_threads, gpus > 0) for _ in range(self.workers)]

    def shutdown(self) -> None:
        with self._lock:
            actors, self._actors, self._free = self._actors, [], []
        if actors:
            ray = ray_module()
            for actor in actors:
                ray.kill(actor)


class _OnActor:
    """A compute thread's step: each item runs on its Ray actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def __call__(self, item: Any) -> Any:
        return ray_module().get(self._actor.compute.remote(item))

    def close(self) -> None:
        pass  # the actor stays up for the next run, until the executor's shutdown()


class _ComputeActor:
    """Lives in a Ray worker process: one compute step (one model), made at each run's start."""

    def __init__(self, torch_threads: int, gpu: bool) -> None:
        from embedlib.encode.torch_threads import limit_torch_threads

        limit_torch_threads(torch_threads)
        if gpu:
            os.environ["EMBEDLIB_DEVICE"] = "cuda"  # this process's own: Ray gave it a GPU
        self._torch_threads = torch_threads
        self._step: Step[Any, Any] | None = None

    def start_run(self, make_step: Callable[[], Step[Any, Any]]) -> None:
        from embedlib.encode.torch_threads import limit_torch_threads

        if self._step is not None:
            self._step.close()
        self._step = make_step()  # the model loads here, once per process (names are cached)
        limit_torch_threads(self._torch_threads)  # torch may have been imported just now

    def compute(self, item: Any) -> Any:
        assert self._step is not None, "start_run comes first"
        return self._step(item)
