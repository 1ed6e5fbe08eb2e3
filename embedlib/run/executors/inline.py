"""Run every item inline, in the caller's thread: the reference every other executor must match."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from embedlib.run.executors.base import Executor, Stages, Step, T, close_all


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(1)  # one worker by definition; a larger count is ignored

    def map_unordered(self, stages: Stages[T, Any, Any], items: Iterable[T]) -> Iterator[Any]:
        steps: list[Step[Any, Any]] = []  # made at the first item: a run with nothing to do loads no model
        try:
            for item in items:
                if not steps:
                    steps = [stages.compute(), stages.finish()]
                compute, finish = steps
                yield finish(compute(item))
        finally:
            close_all(steps)
