"""An encoder that calls an OpenAI-compatible embeddings service.

``model="http://host:port/v1"`` (or ``https://``) encodes through
``POST {url}/embeddings``, the API that OpenAI, Text Embeddings Inference
(TEI), Ollama, vLLM and LiteLLM all serve. ``#name`` after the URL is the
``model`` field sent (``http://localhost:11434/v1#nomic-embed-text``) and
the name stored with each vector; without it the URL is stored. The key,
if the service wants one, comes from ``api_key=``, ``$EMBEDLIB_API_KEY``
or ``$OPENAI_API_KEY``; it is given to ``redaction.remember_secret`` when
the encoder is made, and every message of the service's own that embedlib
passes on (an error body, a warning, an exception) goes through
``redaction.redact``, so a service that echoes the request's headers or
the key does not put the key on screen, in a log or in the errors table.

- Batching: each ``encode`` is sent in requests of at most ``max_inputs``
  texts (TEI's default limit is 32).
- Concurrency: calls are independent (no lock), so every worker of the
  threaded executor has its own requests in flight. That is where many
  workers pay: the service does the work, the workers only wait.
- Retries: a refused or dropped connection, a timeout, a reply that is not
  HTTP or is cut short, 429 and 5xx are retried with exponential backoff (0.5 s up to 8 s,
  or the service's ``Retry-After``) for up to ``retry_s``; then the run
  stops (``EncoderUnavailable``), as it does at once on 401, 403 and 404 (a
  key or URL that is wrong) and on a redirect (the key is not sent on to
  another address: give the URL redirected to). Other 4xx (a text too long,
  say) fail that request only: the texts behind it are found and recorded
  like any the model fails on.

A 200 that is nonsense is never stored. What is wrong with the reply as a
whole is the service's fault, not a text's: the run stops at once with one
line naming the service and what came (``EncoderUnavailable``; no text is
blamed, rows stored before keep their vectors, a later run goes on):

- a body that is not JSON (an HTML page from a proxy or a login portal:
  "sent text/html, not JSON"), or JSON that is not an embeddings list (no
  ``data`` list, an item without an ``embedding``, an embedding that is
  not a list of numbers or base64 of float32, strings among the numbers);
- a count of vectors other than the count of texts sent; indices that are
  not each of ``0..n-1`` once (all at 0, repeated, missing, out of range;
  a reply with no ``index`` at all is taken in its order);
- vectors of unequal lengths within a reply, or of another dimension than
  the one the first request found (a model swapped under a running ingest).

What is wrong with one vector is that text's: a vector of NaN or infinity
(base64 float32 carries them, and Python's JSON reads ``NaN`` and
``Infinity``) and the all-zero vector (it has no direction: cosine distance
to it is undefined) are passed on as they came, and
``failures.unstorable_rows`` records their rows as failed, as it does for
every encoder; the rest of the batch is stored.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedlib import redaction
from embedlib.backoff import Backoff
from embedlib.encode.replies import READ, parse_reply, service_fault, shown, vectors_of
from embedlib.errors import EncoderUnavailable, ModelError

log = redaction.get_logger(__name__)

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the HTTPError it is: the request (and its key) goes nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RemoteEncoder:
    """Texts in, vectors out, through an OpenAI-compatible ``/embeddings`` endpoint. Thread-safe."""

    concurrent = True  # encode calls may run at once: see run.executors.make_executor

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
        redaction.remember_secret(self._api_key)
        self._opener = urllib.request.build_opener(_NoRedirect)
        self.encoding_format = "base64"
        self.retries = 0  # requests sent again after a retryable failure, over this encoder's life
        self._dimension: int | None = None  # every reply's, once the first one has set it
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
        self._dimension = int(probe.shape[1])
        return self._dimension

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
        # Jitter: workers that failed together retry apart.
        backoff = Backoff(_BACKOFF_S[0], _BACKOFF_S[1], total=retry_s, jitter=0.2)
        while True:
            request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    content_type = response.headers.get("Content-Type") or ""
                    reply = response.read()
            except urllib.error.HTTPError as exc:
                if 300 <= exc.code < 400:
                    where = shown(exc.headers.get("Location") or "elsewhere")
                    raise self._unavailable(
                        f"redirected the request (HTTP {exc.code}) to {where}; redirects are not followed "
                        "(the key would go along): give the service's own URL"
                    ) from None
                if exc.code not in _RETRIED_STATUS:
                    refused = EncoderUnavailable if exc.code in _SERVICE_STATUS else _Refused
                    message = (
                        f"the embeddings service {self.name!r} refused the request: HTTP {exc.code} {_reason(exc)}"
                    )
                    raise refused(redaction.redact(message.rstrip()), status=exc.code) from None
                why, asked, status = f"HTTP {exc.code} {_reason(exc)}".rstrip(), _retry_after(exc), exc.code
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                # HTTPException: not HTTP at all, or a body cut short (IncompleteRead)
                if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
                    why = f"sent a broken reply ({type(exc).__name__}: {shown(str(exc))})"
                else:
                    why = f"cannot reach it ({shown(str(getattr(exc, 'reason', None) or exc))})"
                asked, status = None, None
            else:
                return self._vectors(parse_reply(reply, content_type, self.name), len(texts))
            wait = backoff.next_wait(asked)
            if wait is None:
                raise service_fault(
                    self.name, f"failed for {retry_s:g} s: {why}", transient=True, status=status
                ) from None
            if warn:  # first contact retries quietly: its failure says it all in one line
                log.warning("embeddings service %r: %s; retrying in %.1f s", self.name, why, wait)
            self.retries += 1
            time.sleep(wait)

    def _vectors(self, payload: object, expected: int) -> np.ndarray:
        return vectors_of(payload, expected, self.name, self._dimension)

    def _unavailable(self, what: str) -> EncoderUnavailable:
        return service_fault(self.name, what)


class _Refused(ModelError):
    """A request the service refused (400, 413, 422): perhaps for one of its texts."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _rebuild(model: str, max_inputs: int, retry_s: float, timeout_s: float) -> RemoteEncoder:
    return RemoteEncoder(model, max_inputs=max_inputs, retry_s=retry_s, timeout_s=timeout_s)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return min(float(exc.headers.get("Retry-After", "")), _BACKOFF_S[1])  # NaN or -3: Backoff ignores it
    except ValueError:
        return None


def _reason(exc: urllib.error.HTTPError) -> str:
    """The service's own message, on one short line, redacted."""
    try:
        text = exc.read(READ).decode("utf-8", "replace")
        message = json.loads(text).get("error", text)
        if isinstance(message, dict):
            message = message.get("message", "")
    except (ValueError, OSError, AttributeError, RecursionError, http.client.HTTPException):
        message = exc.reason
    return shown(str(message))
