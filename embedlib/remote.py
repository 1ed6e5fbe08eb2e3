"""An encoder that calls an OpenAI-compatible embeddings service.

``model="http://host:port/v1"`` (or ``https://``) encodes through
``POST {url}/embeddings``, the API that OpenAI, Text Embeddings Inference
(TEI), Ollama, vLLM and LiteLLM all serve. ``#name`` after the URL is the
``model`` field sent (``http://localhost:11434/v1#nomic-embed-text``) and
the name stored with each vector; without it the URL is stored. The key,
if the service wants one, comes from ``$EMBEDLIB_API_KEY`` or
``$OPENAI_API_KEY`` and never appears in the URL, logs or errors.

- Batching: each ``encode`` is sent in requests of at most ``max_inputs``
  texts (TEI's default limit is 32).
- Concurrency: calls are independent (no lock), so every worker of the
  threaded executor has its own requests in flight. That is where many
  workers pay: the service does the work, the workers only wait.
- Retries: a refused or dropped connection, a timeout, 429 and 5xx are
  retried with exponential backoff (0.5 s up to 8 s, or the service's
  ``Retry-After``) for up to ``retry_s``; then the run stops
  (``EncoderUnavailable``), as it does at once on 401, 403 and 404 (a key or
  URL that is wrong). Other 4xx (a text too long, say) fail that request
  only: the texts behind it are found and recorded like any the model fails on.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np

from embedlib.errors import EncoderUnavailable, ModelError

log = logging.getLogger(__name__)

SCHEMES = ("http://", "https://")
MAX_INPUTS = 32
RETRY_S = 60.0
FIRST_CONTACT_RETRY_S = 5.0  # a service that is not there at all should not make the user wait a minute
_TIMEOUT_S = 60.0
_RETRIED_STATUS = {408, 429, 500, 502, 503, 504}
_SERVICE_STATUS = {401, 403, 404, 405}  # the key, the URL or the method is wrong: no text is to blame
_BACKOFF_S = (0.5, 8.0)


def is_remote(model: object) -> bool:
    return isinstance(model, str) and model.lower().startswith(SCHEMES)


def split_url(model: str) -> tuple[str, str | None]:
    """``(endpoint, model name or None)`` from ``http://host:port/v1[#name]``."""
    url, _, name = model.partition("#")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(f"model {remote_label(model)!r} is not an http(s) URL of an embeddings service")
    if parts.username or parts.password:
        raise ModelError("put the service's key in $EMBEDLIB_API_KEY, not in the model URL")
    return url.rstrip("/") + "/embeddings", name or None


def remote_label(model: str) -> str:
    """The name stored with each vector: the ``#name``, else the URL (without any credentials)."""
    url, _, name = model.partition("#")
    if name:
        return name
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class RemoteEncoder:
    """Texts in, vectors out, through an OpenAI-compatible ``/embeddings`` endpoint. Thread-safe."""

    concurrent = True  # encode calls may run at once: see executors.make_executor

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        max_inputs: int = MAX_INPUTS,
        retry_s: float = RETRY_S,
        timeout_s: float = _TIMEOUT_S,
    ) -> None:
        self.model = model
        self.endpoint, self.remote_model = split_url(model)
        self.name = remote_label(model)
        self.max_inputs = max_inputs
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._api_key = api_key or os.environ.get("EMBEDLIB_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.encoding_format = "base64"
        self.retries = 0  # requests sent again after a retryable failure, over this encoder's life
        self.dimension = self._first_contact(min(retry_s, FIRST_CONTACT_RETRY_S))

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt (and probed again) in the process that receives it: the key is not pickled.
        return _rebuild, (self.model, self.max_inputs, self.retry_s, self.timeout_s)

    def _first_contact(self, retry_s: float) -> int:
        """The vectors' dimension, from one request; settles the encoding format on the way.

        Vectors come as base64 float32 when the service can (OpenAI's own client
        asks for that): decoding JSON floats cost more CPU than the request's
        wait at 8 workers here. A service that refuses the format gets floats.
        """
        try:
            probe = self._request(["dimension probe"], retry_s=retry_s, warn=False)
        except _Refused:  # perhaps only the format: try floats, which every such service speaks
            self.encoding_format = "float"
            probe = self._request(["dimension probe"], retry_s=retry_s, warn=False)
        return int(probe.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        parts = [
            self._request(list(texts[start : start + self.max_inputs]), retry_s=self.retry_s)
            for start in range(0, len(texts), self.max_inputs)
        ]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _request(self, texts: list[str], *, retry_s: float, warn: bool = True) -> np.ndarray:
        body = {"input": texts, "encoding_format": self.encoding_format}
        if self.remote_model:
            body["model"] = self.remote_model
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        deadline = time.monotonic() + retry_s
        backoff = _BACKOFF_S[0]
        while True:
            request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return _vectors(json.load(response), len(texts), self.name)
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRIED_STATUS:
                    refused = EncoderUnavailable if exc.code in _SERVICE_STATUS else _Refused
                    raise refused(
                        f"the embeddings service {self.name!r} refused the request: HTTP {exc.code} {_reason(exc)}"
                    ) from None
                why, wait = f"HTTP {exc.code}", _retry_after(exc) or backoff
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                why, wait = f"cannot reach it ({reason})", backoff
            if time.monotonic() + wait > deadline:
                raise EncoderUnavailable(
                    f"the embeddings service {self.name!r} failed for {retry_s:g} s: {why}"
                ) from None
            if warn:  # first contact retries quietly: its failure says it all in one line
                log.warning("embeddings service %r: %s; retrying in %.1f s", self.name, why, wait)
            self.retries += 1
            time.sleep(wait * random.uniform(0.8, 1.2))  # jitter: workers that failed together retry apart
            backoff = min(backoff * 2, _BACKOFF_S[1])


class _Refused(ModelError):
    """A request the service refused (400, 413, 422): perhaps for one of its texts."""


def _rebuild(model: str, max_inputs: int, retry_s: float, timeout_s: float) -> RemoteEncoder:
    return RemoteEncoder(model, max_inputs=max_inputs, retry_s=retry_s, timeout_s=timeout_s)


def _vectors(payload: object, expected: int, name: str) -> np.ndarray:
    """The vectors of an embeddings response, in input order, as one float32 array."""
    try:
        items = sorted(payload["data"], key=lambda item: item["index"])  # type: ignore[index]
        vectors = np.asarray([_vector(item["embedding"]) for item in items], dtype=np.float32)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ModelError(f"the embeddings service {name!r} sent a response that is not an embeddings list") from None
    if vectors.ndim != 2 or len(vectors) != expected:
        raise ModelError(f"the embeddings service {name!r} sent {len(vectors)} vectors for {expected} texts")
    return vectors


def _vector(embedding: str | list[float]) -> np.ndarray | list[float]:
    """One vector: a list of floats, or base64 of little-endian float32 (``encoding_format="base64"``)."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    return embedding


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return min(float(exc.headers.get("Retry-After", "")), _BACKOFF_S[1])
    except ValueError:
        return None


def _reason(exc: urllib.error.HTTPError) -> str:
    """The service's own message, on one short line."""
    try:
        text = exc.read(2000).decode("utf-8", "replace")
        message = json.loads(text).get("error", text)
        if isinstance(message, dict):
            message = message.get("message", "")
    except (ValueError, OSError, AttributeError):
        message = exc.reason
    return " ".join(str(message).split())[:200]
