"""The notebooks execute headless, from the saved sweep and from a small sweep run now, and export their figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FIGURES = ("speedup.png", "throughput_vs_batch.png", "time_breakdown.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def execute(notebook: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in environment.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


@pytest.mark.parametrize("rerun", [False, True], ids=["saved sweep", "small sweep now"])
def test_speedup_notebook_executes_and_exports_its_figures(dsn, tmp_path, monkeypatch, rerun):
    environment = {"EMBEDLIB_FIGURES": str(tmp_path), "EMBEDLIB_NOTEBOOK_RERUN": "1" if rerun else "0"}
    if rerun:
        environment["EMBEDLIB_DSN"] = dsn
    nb = execute("speedup.ipynb", environment, monkeypatch)
    for figure in FIGURES:
        data = (tmp_path / figure).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, figure  # a real plot, not an empty canvas
    text = outputs_text(nb)
    assert '"output_type": "error"' not in text
    if rerun:
        assert "points from a sweep run now" in text and "remote-encoder" in text
    else:
        assert "points from scaling.json" in text and "compute" in text and "db-latency" in text
    assert os.environ.get("EMBEDLIB_FIGURES") == str(tmp_path)
