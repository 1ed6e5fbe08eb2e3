"""One behaviour suite, run against every executor.

A new executor is tested by adding it to ``embedlib.run.executors.EXECUTORS``.
The fast HashEncoder exercises the executors and the database path; the
real model checks that threads sharing it neither race nor change vectors.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import ClassVar

import numpy as np
import pytest

from embedlib import (
    ConfigError,
    Ingestor,
    PipelinedExecutor,
    ProcessExecutor,
    ThreadedExecutor,
    make_executor,
)
from embedlib.run.executors import Stages
from embedlib.testing import HashEncoder

WORKER_COUNTS = [1, 3]


def corpus(n: int) -> list[str | None]:
    """n rows: every 5th text repeats an earlier one, every 17th is blank."""
    texts: list[str | None] = []
    for i in range(n):
        if i % 17 == 16:
            texts.append(None if i % 2 else "  ")
        elif i % 5 == 4:
            texts.append(f"text number {i // 2}")
        else:
            texts.append(f"text number {i}")
    return texts


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_every_row_written_exactly_once(dsn, tables, executor_name, workers):
    texts = corpus(1000)
    table = tables.source(texts)
    encoder = HashEncoder()
    report = Ingestor(
        dsn, table=table, model=encoder, executor=executor_name, workers=workers, batch_size=7, window_size=50
    ).run()
    embeddable = [t for t in texts if t and t.strip()]
    assert report.rows == len(embeddable)
    assert report.skipped == len(texts) - len(embeddable)
    assert report.failed == 0
    # each distinct text is encoded once, across windows and batches in flight alike
    assert report.encoded == len(set(embeddable))

    stored = tables.embeddings(table)
    expected_ids = {str(i) for i, t in enumerate(texts, start=1) if t and t.strip()}
    assert set(stored) == expected_ids
    by_id = dict(zip((str(i) for i in range(1, len(texts) + 1)), texts, strict=True))
    for row_id, vector in stored.items():
        assert np.array_equal(vector, encoder.encode([by_id[row_id]])[0])
    frequencies = dict(tables.rows(table, "id::text, frequency"))
    assert all(frequencies[i] == texts.count(by_id[i]) for i in expected_ids)


def test_same_rows_and_vectors_as_serial(dsn, tables, executor_name):
    texts = corpus(300)
    serial_table, other_table = tables.source(texts), tables.source(texts)
    Ingestor(dsn, table=serial_table, model=HashEncoder(), executor="serial", batch_size=10).run()
    Ingestor(dsn, table=other_table, model=HashEncoder(), executor=executor_name, workers=4, batch_size=10).run()
    columns = "id, embedding::text, text_hash, char_length, token_count, truncated, norm, frequency"
    assert tables.rows(other_table, columns) == tables.rows(serial_table, columns)


def test_limit_and_rerun(dsn, tables, executor_name):
    table = tables.source([f"row {i}" for i in range(100)])
    first = Ingestor(dsn, table=table, model=HashEncoder(), executor=executor_name, workers=2).run(limit=30)
    assert (first.pending, first.rows) == (30, 30)
    rest = Ingestor(dsn, table=table, model=HashEncoder(), executor=executor_name, workers=2).run()
    assert (rest.pending, rest.rows, rest.encoded) == (70, 70, 70)
    assert len(tables.embeddings(table)) == 100


@pytest.mark.model
def test_threads_sharing_the_real_model_do_not_race(dsn, tables, sample_texts):
    # Eight workers and tiny batches: many concurrent calls into one model and
    # one fast tokenizer, which raises "Already borrowed" if called concurrently.
    texts = sample_texts[:240]
    serial_table, threaded_table = tables.source(texts), tables.source(texts)
    Ingestor(dsn, table=serial_table, executor="serial", batch_size=4).run()
    report = Ingestor(dsn, table=threaded_table, executor="threaded", workers=8, batch_size=4).run()
    assert report.rows == len(texts) and report.failed == 0
    serial, threaded = tables.embeddings(serial_table), tables.embeddings(threaded_table)
    assert set(threaded) == set(serial) == {str(i) for i in range(1, len(texts) + 1)}
    for row_id, vector in serial.items():
        np.testing.assert_allclose(threaded[row_id], vector, atol=1e-5)


def test_make_executor():
    assert isinstance(make_executor("auto"), PipelinedExecutor)
    assert make_executor("auto", 4).workers == 4
    assert make_executor("serial", 4).workers == 1
    assert make_executor("process").workers == (os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="unknown executor 'bogus'"):
        make_executor("bogus")
    with pytest.raises(ConfigError, match="workers"):
        ThreadedExecutor(0)


def test_shutdown_twice_is_safe(executor_name):
    executor = make_executor(executor_name, 2)
    executor.shutdown()
    executor.shutdown()


class RecordingWorker:
    """Stand-in steps, one encoding and one writing: no model, no database; they record what they saw."""

    closed = 0
    written: ClassVar[list[int]] = []

    def __init__(self, half: str, fail_on: int | None = None) -> None:
        self.half = half
        self.fail_on = fail_on

    @classmethod
    def stages(cls, fail_on: int | None = None) -> Stages[int, int, int]:
        return Stages(compute=functools.partial(cls, "encode", fail_on), finish=functools.partial(cls, "write"))

    def __call__(self, item: int) -> int:
        if self.half == "encode" and item == self.fail_on:
            raise RuntimeError(f"cannot encode {item}")
        if self.half == "write":
            RecordingWorker.written.append(item)
        return item

    def close(self) -> None:
        RecordingWorker.closed += 1


@pytest.mark.parametrize("workers", [1, 3])
def test_pipeline_stages_pass_on_errors_and_stop(workers):
    def batches():  # type: ignore[no-untyped-def]
        yield from range(5)
        raise OSError("source went away")

    executor = PipelinedExecutor(workers)
    RecordingWorker.written = []
    seen = []
    with pytest.raises(OSError, match="source went away"):
        for result in executor.map_unordered(RecordingWorker.stages(), batches()):
            seen.append(result)
    assert sorted(seen) == sorted(RecordingWorker.written)  # every batch written is reported, even so
    with pytest.raises(RuntimeError, match="cannot encode 3"):
        list(executor.map_unordered(RecordingWorker.stages(fail_on=3), iter(range(10))))
    assert not [t for t in threading.enumerate() if t.name.startswith("embedlib-")]


def test_pipeline_closed_early_stops_its_threads_and_closes_workers():
    RecordingWorker.closed = 0
    results = PipelinedExecutor(2).map_unordered(RecordingWorker.stages(), iter(range(1000)))
    assert next(results) is not None
    results.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("embedlib-")]
    assert RecordingWorker.closed >= 1


def test_process_executor_shares_the_cores_and_refuses_what_it_cannot_send(dsn, tables):
    executor = ProcessExecutor(2)
    assert executor.torch_threads == max(1, (os.cpu_count() or 1) // 2)
    table = tables.source(["one", "two"])

    class Unpicklable(HashEncoder):
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise TypeError("no pickling")

    with pytest.raises(ConfigError, match="cannot be pickled"):
        Ingestor(dsn, table=table, model=Unpicklable(), executor=executor).run()


@pytest.mark.model
def test_process_workers_load_the_real_model_and_match_serial(dsn, tables, sample_texts):
    texts = sample_texts[:60]
    serial_table, process_table = tables.source(texts), tables.source(texts)
    Ingestor(dsn, table=serial_table, batch_size=8).run()
    report = Ingestor(dsn, table=process_table, executor="process", workers=2, batch_size=8).run()
    assert (report.rows, report.encoded) == (60, 60)
    serial, processed = tables.embeddings(serial_table), tables.embeddings(process_table)
    assert set(processed) == set(serial)
    for row_id, vector in serial.items():
        np.testing.assert_allclose(processed[row_id], vector, atol=1e-5)


class CallRecordingEncoder(HashEncoder):
    """Records the texts of every encode call (in-process executors only)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        return super().encode(texts)


def test_a_token_budget_splits_calls_to_the_model_not_batches(dsn, tables):
    texts = [" ".join(["word"] * (1 + i % 30)) + f" {i}" for i in range(200)]
    budgeted, unbudgeted = tables.source(texts), tables.source(texts)
    encoder = CallRecordingEncoder()
    report = Ingestor(dsn, table=budgeted, model=encoder, batch_size=50, batch_tokens=200, executor="serial").run()
    assert (report.rows, report.encoded) == (200, 200)
    assert len(encoder.calls) > 200 // 50  # more calls than batches
    for call in encoder.calls:  # HashEncoder counts words as tokens
        assert len(call) == 1 or len(call) * max(len(t.split()) for t in call) <= 200
    Ingestor(dsn, table=unbudgeted, model=HashEncoder(), batch_size=50, batch_tokens=0).run()
    columns = "id, embedding::text, token_count"
    assert tables.rows(budgeted, columns) == tables.rows(unbudgeted, columns)
