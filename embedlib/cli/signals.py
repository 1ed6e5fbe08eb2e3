"""What SIGINT and SIGTERM do while ``main`` runs.

The first Ctrl-C (or SIGTERM) during an ingest lets the batches
under way commit, prints the report and exits 130 (143). A second one, or
the first anywhere else, stops at once: "embedlib: interrupted" on stderr,
exit 130 for SIGINT, 143 for SIGTERM, and nothing more, whatever the
interruption breaks on its way out. An interruption can land anywhere, in
the middle of importing torch too, and leave a half-imported module whose
next import fails (an ImportError that once came out as "internal error"):
so after that line stderr goes to /dev/null, the stack unwinds (batches
under way roll back, connections close), exit handlers run (the embedded
server's stop), and the process ends with ``os._exit``, waiting for no
thread and leaving no say to interpreter shutdown. If unwinding takes more
than ``STOP_GRACE_S`` (a thread stuck in a model call), or a third signal
comes, the process ends there and then. A signal takes effect when the main
thread next runs Python code (a long C call, such as loading torch's
libraries, finishes first); two that arrive during one such call count as
two, not one as Python alone would have it. The handlers are installed
first thing in ``main`` and stay for the life of the process; a signal
before that (while Python imports embedlib, a fraction of a second) gets
Python's default.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

STOP_GRACE_S = 5.0  # the most a stop at once waits for the stack to unwind and exit handlers to run

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Signals:
    """What SIGINT and SIGTERM do while ``main`` runs (see the module docstring). One per process."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.stopping: int | None = None  # the signal that stopped the command at once
        self._graceful: Callable[[], None] | None = None
        self._pid = os.getpid()
        self._pipe: tuple[int, int] | None = None  # Python's wakeup fd: one byte per signal, none folded
        self._stopped_at_once = threading.Event()  # wakes the watchdog (see install)
        self._watchdog_thread: threading.Thread | None = None

    def install(self) -> None:
        self.received, self.stopping, self._graceful = [], None, None
        try:
            for signum in STOPPING_SIGNALS:
                signal.signal(signum, self._handle)
        except ValueError:  # main called from another thread: signals are not ours to handle
            return
        if self._watchdog_thread is None:
            # Started now, not by the handler: a handler that starts a thread while the main
            # thread is inside threading's own bookkeeping (starting an executor's) deadlocks.
            self._watchdog_thread = threading.Thread(target=self._watchdog, name="embedlib-stop", daemon=True)
            self._watchdog_thread.start()
        try:
            if self._pipe is None:
                read, write = os.pipe()
                self._pipe = read, write
                os.set_blocking(read, False)
                os.set_blocking(write, False)
            signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except (OSError, ValueError, AttributeError):  # no pipes as wakeup fds here (Windows): no counting
            self._pipe = None

    @contextlib.contextmanager
    def stopping_gracefully(self, stop: Callable[[], None]) -> Iterator[None]:
        """Within: the first signal calls ``stop`` (the run commits what is under way and reports)."""
        self._graceful = stop
        try:
            yield
        finally:
            self._graceful = None

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked child that kept the handler: what Python would do
            raise KeyboardInterrupt
        for arrived in self._arrivals(signum):
            self.received.append(arrived)
            if self.stopping is not None:  # a third: unwinding takes too long for the user
                os._exit(128 + self.stopping)
            if self._graceful is not None and len(self.received) == 1:
                write_stderr("embedlib: stopping after the batches under way (press Ctrl-C again to stop now)")
                self._graceful()
            else:
                self._stop_now(arrived)

    def _arrivals(self, signum: int) -> list[int]:
        """The signals that arrived since the last call. Python runs a handler once for however many
        of one signal arrived while the main thread was in C code; the wakeup fd has a byte for each."""
        if self._pipe is None:
            return [signum]
        previous = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        if previous != self._pipe[1]:  # another wakeup fd was set since (an event loop's): no counting
            signal.set_wakeup_fd(previous)
            return [signum]
        try:
            data = os.read(self._pipe[0], 4096)
        except BlockingIOError:
            data = b""
        # Empty: this call's signal was read, and handled, by an earlier call.
        return [byte for byte in data if byte in STOPPING_SIGNALS]

    def _stop_now(self, signum: int) -> NoReturn:
        self.stopping = signum
        write_stderr("embedlib: interrupted")
        if not os.environ.get("EMBEDLIB_DEBUG"):
            silence_stderr()  # what the interruption breaks on its way out is not the user's concern
        self._stopped_at_once.set()
        raise KeyboardInterrupt  # unwind: batches under way roll back, connections close

    def _watchdog(self) -> None:
        """End the process ``STOP_GRACE_S`` after a stop at once, if it has not ended by then."""
        self._stopped_at_once.wait()
        time.sleep(STOP_GRACE_S)
        os._exit(128 + (self.stopping or signal.SIGINT))

    def finish(self) -> NoReturn:
        """End the process stopped at once: exit handlers (the embedded server's stop), then ``os._exit``."""
        assert self.stopping is not None
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        os._exit(128 + self.stopping)


SIGNALS = Signals()


def write_stderr(line: str) -> None:
    """One line straight to fd 2: safe in a signal handler, where stderr's buffer may be mid-write."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode("ascii", "backslashreplace"))


def silence_stderr() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
