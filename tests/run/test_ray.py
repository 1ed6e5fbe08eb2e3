"""The ray executor on a local Ray instance: sharing a table with plain ``embedlib ingest`` processes.

The behaviour suite (``test_executors.py``) runs against it too, through
``EXECUTORS``. Skipped where Ray is not installed; ``make setup`` installs it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from embedlib import Ingestor, RayExecutor
from tests.processes import assert_clean_failure, assert_shared_exactly_once, half_duplicated, run_cli, start_cli

pytest.importorskip("ray", reason="the ray executor needs the optional extra embedlib[ray]")


@pytest.mark.model
def test_a_ray_run_and_two_ingest_processes_share_one_table(conn, dsn, tables, sample_texts):
    texts = half_duplicated(sample_texts, 2000, seed=6)
    table = tables.source(texts)
    # Ray and its actors' models start first (seconds), so that the three runs overlap.
    pool = RayExecutor(2)
    warm_up = tables.source(sample_texts[:10])
    Ingestor(dsn, table=warm_up, executor=pool, batch_size=25).run()
    processes = [start_cli("ingest", table, "25", "--window-size", "100", "--json", dsn=dsn) for _ in range(2)]
    ray_reports = []
    ray_run = threading.Thread(
        target=lambda: ray_reports.append(
            Ingestor(dsn, table=table, executor=pool, batch_size=25, window_size=100).run()
        )
    )
    ray_run.start()
    reports = []
    for proc in processes:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    ray_run.join(timeout=600)
    pool.shutdown()
    [ray_report] = ray_reports
    summary = [(r["rows"], r["encoded"]) for r in reports] + [(ray_report.rows, ray_report.encoded)]
    print(f"\n2 ingest processes and a Ray run on {len(texts)} rows: (rows, encoded) = {summary}")
    assert ray_report.executor == "ray" and ray_report.rows > 0, "the Ray run took no part: nothing shared"
    assert_shared_exactly_once(conn, tables, table, texts, summary)


@pytest.mark.model
def test_cli_runs_on_ray(dsn, tables, sample_texts):
    table = tables.source(sample_texts[:60])
    proc = start_cli("ingest", table, "20", "--executor", "ray", "--workers", "2", "--json", dsn=dsn)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert (report["rows"], report["executor"], report["workers"]) == (60, "ray", 2)


@pytest.mark.model
def test_cli_joins_a_cluster_started_with_ray_start(dsn, tables, sample_texts):
    """A cluster of one node, started as a user would (``ray start --head``), joined by address."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    head_log = Path(temp_dir) / "head.log"  # a file, not a pipe: nobody reads it while the head runs
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--temp-dir", temp_dir, "--block"],
        stdout=subprocess.DEVNULL, stderr=head_log.open("w"),
    )  # fmt: skip
    try:
        _wait_for_port(port, head, head_log)
        table = tables.source(sample_texts[:40])
        proc = start_cli("ingest", table, "20", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--json",
                         dsn=dsn)  # fmt: skip
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert json.loads(out)["rows"] == 40
        token_file = Path("~/.ray/auth_token").expanduser()
        if token_file.is_file():  # Ray >= 2.59: the head requires a token (older ones admit anyone)
            # Refused (Ray sends no token when told not to): one line naming Ray's reason, never the token.
            pending = tables.source(sample_texts[40:45])
            refused = run_cli("ingest", pending, "-q", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                              dsn=dsn, env={"RAY_AUTH_MODE": "disabled"})  # fmt: skip
            assert_clean_failure(refused, "could not join the Ray cluster", "token is missing or incorrect")
            assert token_file.read_text().strip() not in refused.stderr
    finally:
        head.terminate()  # --block: the head takes its cluster's processes down with it
        head.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ray start exited: {log.read_text()}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise AssertionError(f"ray start did not listen on port {port} within {timeout_s:.0f} s")
