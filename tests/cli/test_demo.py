"""`embedlib demo` on the embedded default, as a newcomer first runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model


def test_demo_on_a_fresh_embedded_database(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("EMBEDLIB_DSN", "DATABASE_URL")}
    env["EMBEDLIB_HOME"] = str(tmp_path / "home")

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "embedlib", "demo", "--quiet"], capture_output=True, text=True, env=env, timeout=600
        )

    first = demo()
    assert first.returncode == 0, first.stderr
    assert "loaded 2000 sample sentences" in first.stdout
    assert "embedded 2000 rows" in first.stdout
    assert "nearest to" in first.stdout and "compression" in first.stdout.lower()
    second = demo()
    assert second.returncode == 0, second.stderr
    assert "embedded 0 rows" in second.stdout and "encoded 0 distinct" in second.stdout
    assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
