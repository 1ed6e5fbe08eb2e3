"""The notebooks execute headless, show their figures inline and export them as PNG: speedup.ipynb from the
saved sweep and from a small sweep run now, explore.ipynb on a table of the test database."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from psycopg2 import sql

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FIGURES = ("speedup.png", "throughput_vs_batch.png", "time_breakdown.png")
EXPLORE_FIGURES = ("token_lengths.png", "duplicates.png", "throughput.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def execute(notebook: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in environment.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


def cell_text(cell: nbformat.NotebookNode) -> str:
    return json.dumps(cell.outputs)


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(cell for cell in nb.cells if cell.get("id") == cell_id)


def shown(cell: nbformat.NotebookNode, mime: str) -> list[str]:
    """What the cell displays as ``mime`` (display_data and execute_result outputs)."""
    return [
        output.data[mime]
        for output in cell.outputs
        if output.output_type in ("display_data", "execute_result") and mime in output.data
    ]


def assert_figures(nb: nbformat.NotebookNode, directory: Path, figures: tuple[str, ...]) -> None:
    """Each figure is a real plot in a PNG file, and shown inline by the cell that saves it."""
    for figure in figures:
        data = (directory / figure).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, figure  # a real plot, not an empty canvas
        saving = [c for c in nb.cells if c.cell_type == "code" and figure in c.source and "savefig" in c.source]
        assert len(saving) == 1, figure
        assert shown(saving[0], "image/png"), f"{figure} is not shown inline"


def result(cell: nbformat.NotebookNode, mime: str) -> str:
    """The cell's value (its last expression) as ``mime``: a table, here."""
    (value,) = [output.data[mime] for output in cell.outputs if output.output_type == "execute_result"]
    return str(value)


@pytest.mark.parametrize("rerun", [False, True], ids=["saved sweep", "small sweep now"])
def test_speedup_notebook_executes_and_exports_its_figures(dsn, tmp_path, monkeypatch, rerun):
    environment = {"EMBEDLIB_FIGURES": str(tmp_path), "EMBEDLIB_NOTEBOOK_RERUN": "1" if rerun else "0"}
    if rerun:
        environment["EMBEDLIB_DSN"] = dsn
    nb = execute("speedup.ipynb", environment, monkeypatch)
    assert_figures(nb, tmp_path, FIGURES)
    text = outputs_text(nb)
    assert '"output_type": "error"' not in text
    if rerun:
        assert "points from a sweep run now" in text and "remote-encoder" in text
    else:
        assert "points from scaling.json" in text and "compute" in text and "db-latency" in text
    assert os.environ.get("EMBEDLIB_FIGURES") == str(tmp_path)


@pytest.mark.model
def test_explore_notebook_shows_a_table_of_ones_own(dsn, conn, tables, sample_texts, tmp_path, monkeypatch):
    placeholder = "(no description)"
    long_texts = [" ".join(sample_texts[i : i + 40]) for i in range(1000, 1120, 40)]  # past the 256-token window
    texts = [*sample_texts[:270], *[placeholder] * 12, *long_texts, None, "  "]
    table = tables.source(texts, prefix="explore")
    query = sample_texts[7]
    environment = {
        "EMBEDLIB_DSN": dsn,
        "EMBEDLIB_TABLE": table,
        "EMBEDLIB_SAMPLE_ROWS": str(len(texts)),
        "EMBEDLIB_QUERIES": f"{query};play music files",
        "EMBEDLIB_FIGURES": str(tmp_path),
    }
    nb = execute("explore.ipynb", environment, monkeypatch)
    assert '"output_type": "error"' not in outputs_text(nb)
    assert_figures(nb, tmp_path, EXPLORE_FIGURES)

    assert f"{len(texts)} rows of public.{table}: {len(texts) - 2} texts, 2 NULL or blank" in outputs_text(nb)
    assert "of texts (3) are longer than the window and would be truncated" in cell_text(cell(nb, "tokens"))
    longest = result(cell(nb, "longest"), "text/plain")
    assert longest.count("True") == 3  # the truncated column
    # the placeholder tops the frequency table, 12 rows
    assert re.search(r"^0\s+\(no description\)\s+12$", result(cell(nb, "duplicates"), "text/plain"), re.M)
    throughput = result(cell(nb, "throughput"), "text/plain")
    for batch_size in (16, 64, 256):
        assert re.search(rf"^{batch_size}\s+{len(texts) - 2}\s", throughput, re.M), throughput  # rows embedded

    assert "10 matches for 2 queries" in cell_text(cell(nb, "search"))
    search = result(cell(nb, "search"), "text/html")
    assert search.count("<tr>") >= 10  # a row per match
    # the query's own row comes first, at distance 0 (ids are 1..n)
    first = rf"{re.escape(html.escape(query))}</th>\s*<th>1</th>\s*<td>-?0\.000</td>\s*<td>8</td>"
    assert re.search(first, search), search
    with conn.cursor() as cur:  # the scratch targets are gone, the source stays
        cur.execute("SELECT relname FROM pg_class WHERE relname LIKE %s", (f"{table}%",))
        assert sorted(name for (name,) in cur.fetchall()) == sorted([table, f"{table}_pkey"])
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert cur.fetchone()[0] == len(texts)
