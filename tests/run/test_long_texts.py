"""Texts longer than the model's window: how many were cut is reported."""

from __future__ import annotations

import json

from embedlib import Ingestor
from embedlib.testing import HashEncoder


def test_a_run_reports_the_rows_cut_at_the_models_window(dsn, tables):
    long_text = " ".join(f"word{i}" for i in range(HashEncoder.max_tokens + 10))  # one "token" a word
    table = tables.source(["short", long_text, long_text, "also short"])
    report = Ingestor(dsn, table=table, model=HashEncoder()).run()
    assert (report.rows, report.encoded, report.truncated) == (4, 3, 2)  # rows, not texts: both are cut
    assert "2 rows are longer than the model's window" in report.summary()
    assert json.loads(report.to_json())["truncated"] == 2
    assert [truncated for (truncated,) in tables.rows(table, "truncated")] == [False, True, True, False]
