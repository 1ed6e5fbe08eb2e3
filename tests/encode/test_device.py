"""--device and --precision: resolved once, refused in one line where this machine cannot do them, and the
token budget of a call sized for the model and the device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from embedlib.encode.device import CPU_CALL_TOKENS, call_tokens, resolve_device, torch_dtype
from embedlib.errors import ConfigError


def test_auto_is_the_cpu_here_unless_a_process_was_given_a_device(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("EMBEDLIB_DEVICE", raising=False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")


def test_fp16_needs_a_gpu_and_the_others_run_anywhere():
    torch = pytest.importorskip("torch")
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        torch_dtype("fp16", "cpu")
    assert torch_dtype("bf16", "cpu") == torch.bfloat16
    assert torch_dtype("fp16", "cuda") == torch.float16


def test_a_call_holds_more_tokens_for_a_narrower_model_and_on_a_gpu():
    assert call_tokens(384, "cpu") == CPU_CALL_TOKENS  # the default model on a CPU, as measured
    assert call_tokens(32, "cpu") == CPU_CALL_TOKENS * 12
    assert call_tokens(1024, "cpu") == CPU_CALL_TOKENS  # never less than the default model's
    assert call_tokens(384, "cuda") > call_tokens(384, "cpu")


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--device", "cuda"], "embedlib: error: --device cuda: torch sees no CUDA GPU"),
        (["--precision", "fp16"], "embedlib: error: --precision fp16 needs a GPU"),
        (["--device", "tpu"], "argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["--device", "cuda:3"], "embedlib: error: --device cuda:3: torch sees no CUDA GPU"),
    ],
)
def test_the_command_refuses_a_device_it_cannot_use_in_one_line(dsn, conn, tables, flags, complaint):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    table = tables.source(["one sentence", "another"])
    result = subprocess.run(
        [sys.executable, "-m", "embedlib", "ingest", table, "--dsn", dsn, *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with conn.cursor() as cur:  # refused before anything was made
        cur.execute("SELECT to_regclass(%s)", (f"{table}_embeddings",))
        assert cur.fetchone()[0] is None


def test_the_environment_names_the_device_when_the_command_does_not(dsn, conn, tables):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    table = tables.source(["one sentence"])
    result = subprocess.run(
        [sys.executable, "-m", "embedlib", "ingest", table, "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EMBEDLIB_DEVICE": "cuda"},
    )
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "embedlib: error: --device cuda: torch sees no CUDA GPU here (is this torch build CUDA-enabled?)",
    )
