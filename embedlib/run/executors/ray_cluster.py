"""Joining a Ray cluster, or starting a local Ray instance, with one-line errors.

Ray's own failures to join are slow (it keeps retrying an address that is not
there) and loud (its C++ core writes to file descriptor 2 every second): the
address is checked first, and what Ray says is kept aside and cut to its last line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from embedlib.errors import ConfigError, one_line


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'embedlib[ray]'") from None
    return ray


def join(ray: Any, address: str | None) -> None:
    """Start a local Ray instance (no address), or join the cluster at ``address``."""
    init = functools.partial(
        ray.init,
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        logging_level=logging.ERROR,  # Ray's start-up notes are not the user's business; its errors are
    )
    if not address or address in ("auto", "local"):
        init()
        return
    _check_reachable(address)
    _send_token_if_any()
    # Ray's C++ core writes a warning to file descriptor 2 every second while a
    # join is refused: kept aside, and only the last one shown, in the one-line error.
    with tempfile.TemporaryFile() as aside:
        try:
            with _fd2_to(aside):
                init()
            return
        except ConnectionError as exc:
            aside.seek(0)
            reason = _last_complaint(aside.read().decode("utf-8", "replace")) or one_line(exc)
    raise ConfigError(
        f"could not join the Ray cluster at {address!r}: {reason}; if it requires a token, set "
        f"RAY_AUTH_TOKEN or copy the head's {RAY_TOKEN_FILE} here"
    )


@contextlib.contextmanager
def _fd2_to(file: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 (which C++ code writes to directly) at ``file`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _last_complaint(log: str) -> str:
    """The message of the last line of a C++ log, without its ``[time level pid] file.cc:line:`` prefix."""
    lines = [line for line in log.splitlines() if line.strip()]
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", lines[-1]).strip() if lines else ""


# Where ``ray start --head`` keeps the token of a cluster that requires one (Ray >= 2.59 makes
# such clusters by default), and which Ray's own tools read.
RAY_TOKEN_FILE = "~/.ray/auth_token"


def _send_token_if_any() -> None:
    """Have the driver present the cluster token, where there is one.

    Ray turns token authentication on for a cluster that ``ray start --head``
    makes, but a driver joining it by address presents the token only under
    ``RAY_AUTH_MODE=token`` and is refused otherwise. Set it when a token is
    configured (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or the token
    file), as Ray does itself for a local cluster; an explicit
    ``RAY_AUTH_MODE`` is left alone. Nothing here reads or prints the token.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    configured = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not configured and not Path(RAY_TOKEN_FILE).expanduser().is_file():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled; untyped
    except ImportError:
        return  # a Ray without token authentication: nothing to present
    Config.initialize("")  # Ray reads RAY_AUTH_MODE when imported: have it read it again (as Ray itself does)


def _check_reachable(address: str) -> None:
    """Fail in seconds, in one line, where ``ray.init`` would keep trying an address that is not there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
