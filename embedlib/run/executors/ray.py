"""Encode on a pool of Ray actors, each loading the model once; read, claim and write in the driver.

    batches (read + plan, driver) --> N actors (encode) --> writer threads (driver, COPY)

This is the pipelined executor with its encoder threads each driving one
actor: the driver leases spans and claims texts in PostgreSQL exactly as
any ingestor does (see ``claims``), so a Ray run and plain ``embedlib
ingest`` processes share one table, and only batches and vectors cross to
the actors, never a database connection. Actors are started at the first
batch and kept until ``shutdown()`` (like the process executor's
processes: loading a model takes seconds). Each actor asks for one CPU, or
``num_gpus`` GPUs where the cluster has them (the model then runs on the
GPU), and caps torch at ``cores / workers`` threads on its node.

Without an address it starts (or joins) a local Ray instance in this
process; ``address`` or ``$RAY_ADDRESS`` joins a cluster (``ray start
--head`` on one machine, ``ray start --address ...`` on the others; each
needs embedlib and the model installed). Ray is an optional extra:
``pip install 'embedlib[ray]'``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from embedlib.errors import ConfigError, one_line
from embedlib.plan.batching import Batch
from embedlib.run.executors.base import Worker, WorkerFactory
from embedlib.run.executors.pipeline import PipelinedExecutor
from embedlib.run.worker import BatchResult, EncodedBatch

# How long an actor may take to be placed and to load its model.
ACTOR_START_S = 300.0


class RayExecutor(PipelinedExecutor):
    name = "ray"

    def __init__(self, workers: int = 2, *, address: str | None = None, num_gpus: float = 0.0, depth: int = 4) -> None:
        super().__init__(workers, depth=depth, concurrent_encoding=True)  # one encoder thread per actor
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_gpus = num_gpus
        self._actors: list[Any] = []
        self._free: list[Any] = []  # actors not driven by an encoder thread in the current run
        self._lock = threading.Lock()

    def map_unordered(self, make_worker: WorkerFactory, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return  # nothing to do: no Ray started
        yield from super().map_unordered(make_worker, itertools.chain([first], batches))

    def encoder_factory(self, make_worker: WorkerFactory) -> WorkerFactory:
        # In the caller's thread, before the stages start: Ray wants to be started from the
        # main thread (started from another, its raylet died mid-run under pytest).
        ray = _ray()
        with self._lock:
            if not self._actors:
                self._start_actors(ray)
            self._free = list(self._actors)  # a new run: every actor is free again
        factory = ray.put(make_worker)  # sent once a run, not with every batch

        def drive_an_actor() -> Worker:
            """Called by an encoder thread at its first batch."""
            with self._lock:
                actor = self._free.pop()
            try:
                ray.get(actor.start_run.remote(factory), timeout=ACTOR_START_S)
            except ray.exceptions.GetTimeoutError:
                raise ConfigError(
                    f"a Ray actor did not start in {ACTOR_START_S:g} s: does the cluster have "
                    f"{self.num_gpus:g} GPUs free per worker, and embedlib installed on every node?"
                ) from None
            return _ActorEncoder(actor)

        return drive_an_actor

    def _start_actors(self, ray: Any) -> None:
        if not ray.is_initialized():
            _join(ray, self.address)
        # One CPU each while the cluster has enough, else a share: more actors than CPUs
        # asking for a whole one would wait for each other forever.
        cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1)) / self.workers)
        actor_class = ray.remote(num_cpus=cpus, num_gpus=self.num_gpus)(_EncodingActor)
        torch_threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._actors = [actor_class.remote(torch_threads) for _ in range(self.workers)]

    def shutdown(self) -> None:
        with self._lock:
            actors, self._actors, self._free = self._actors, [], []
        if actors:
            ray = _ray()
            for actor in actors:
                ray.kill(actor)


class _ActorEncoder:
    """The encode half of a worker whose model lives in a Ray actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def encode(self, batch: Batch) -> EncodedBatch:
        return _ray().get(self._actor.encode.remote(batch))

    def __call__(self, batch: Batch) -> BatchResult:
        raise NotImplementedError("an actor encodes; the driver writes")

    def write(self, encoded: EncodedBatch) -> BatchResult:
        raise NotImplementedError("an actor encodes; the driver writes")

    def close(self) -> None:
        pass  # the actor stays up for the next run, until the executor's shutdown()


class _EncodingActor:
    """Lives in a Ray worker process: one model, loaded at the first run, encoding batches."""

    def __init__(self, torch_threads: int) -> None:
        from embedlib.encode.local import limit_torch_threads

        limit_torch_threads(torch_threads)
        self._torch_threads = torch_threads
        self._worker: Worker | None = None

    def start_run(self, make_worker: WorkerFactory) -> None:
        from embedlib.encode.local import limit_torch_threads

        self._worker = make_worker()  # the model loads here, once per process (names are cached)
        limit_torch_threads(self._torch_threads)  # torch may have been imported just now
        _to_gpu_if_any(self._worker)

    def encode(self, batch: Batch) -> EncodedBatch:
        assert self._worker is not None, "start_run comes first"
        return self._worker.encode(batch)


def _to_gpu_if_any(worker: Worker) -> None:
    model = getattr(getattr(worker, "_encoder", None), "_model", None)
    if model is None:
        return
    import torch

    if torch.cuda.is_available() and str(getattr(model, "device", "cpu")) == "cpu":
        model.to("cuda")


def _join(ray: Any, address: str | None) -> None:
    """Start a local Ray instance (no address), or join the cluster at ``address``."""
    init = functools.partial(
        ray.init,
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        logging_level=logging.ERROR,  # Ray's start-up notes are not the user's business; its errors are
    )
    if not address or address in ("auto", "local"):
        init()
        return
    _check_reachable(address)
    _send_token_if_any()
    # Ray's C++ core writes a warning to file descriptor 2 every second while a
    # join is refused: kept aside, and only the last one shown, in the one-line error.
    with tempfile.TemporaryFile() as aside:
        try:
            with _fd2_to(aside):
                init()
            return
        except ConnectionError as exc:
            aside.seek(0)
            reason = _last_complaint(aside.read().decode("utf-8", "replace")) or one_line(exc)
    raise ConfigError(
        f"could not join the Ray cluster at {address!r}: {reason}; if it requires a token, set "
        f"RAY_AUTH_TOKEN or copy the head's {RAY_TOKEN_FILE} here"
    )


@contextlib.contextmanager
def _fd2_to(file: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 (which C++ code writes to directly) at ``file`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _last_complaint(log: str) -> str:
    """The message of the last line of a C++ log, without its ``[time level pid] file.cc:line:`` prefix."""
    lines = [line for line in log.splitlines() if line.strip()]
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", lines[-1]).strip() if lines else ""


# Where ``ray start --head`` keeps the token of a cluster that requires one (Ray >= 2.59 makes
# such clusters by default), and which Ray's own tools read.
RAY_TOKEN_FILE = "~/.ray/auth_token"


def _send_token_if_any() -> None:
    """Have the driver present the cluster token, where there is one.

    Ray turns token authentication on for a cluster that ``ray start --head``
    makes, but a driver joining it by address presents the token only under
    ``RAY_AUTH_MODE=token`` and is refused otherwise. Set it when a token is
    configured (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or the token
    file), as Ray does itself for a local cluster; an explicit
    ``RAY_AUTH_MODE`` is left alone. Nothing here reads or prints the token.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    configured = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not configured and not Path(RAY_TOKEN_FILE).expanduser().is_file():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled; untyped
    except ImportError:
        return  # a Ray without token authentication: nothing to present
    Config.initialize("")  # Ray reads RAY_AUTH_MODE when imported: have it read it again (as Ray itself does)


def _check_reachable(address: str) -> None:
    """Fail in seconds, in one line, where ``ray.init`` would keep trying an address that is not there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'embedlib[ray]'") from None
    return ray
