"""What a follower shows while it runs: a live status line on a terminal (a line per run that did
something otherwise), and, with ``--metrics-port``, Prometheus metrics over HTTP."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from embedlib.errors import ConfigError

if TYPE_CHECKING:
    from embedlib.run.report import IngestReport


class Watching:
    """Told of every run of a follower (``Ingestor.follow(on_cycle, every_cycle=True)``)."""

    def __init__(self, table: str, *, show: bool, metrics_port: int | None, metrics_host: str) -> None:
        self._table = table
        self._show = show
        self._live = show and sys.stderr.isatty()
        self._totals = {"rows": 0, "encoded": 0, "removed": 0, "failed": 0}
        self._metrics = _Metrics(table, metrics_port, metrics_host) if metrics_port is not None else None

    def __call__(self, report: IngestReport) -> None:
        for name in self._totals:
            self._totals[name] += getattr(report, name)
        if self._metrics is not None:
            self._metrics.update(report)
        if self._live:
            print(f"\r\x1b[K{self._line(report)}", end="", file=sys.stderr, flush=True)
        elif self._show and report.did_something:
            print(f"embedlib: {self._line(report)}", file=sys.stderr, flush=True)

    def _line(self, report: IngestReport) -> str:
        t = self._totals
        line = (
            f"{time.strftime('%H:%M:%S')} {self._table}: embedded {t['rows']} rows ({t['encoded']} encoded), "
            f"removed {t['removed']}, failed {t['failed']}"
        )
        if report.tracked:
            oldest = "" if not report.queue_age_s else f", oldest {report.queue_age_s:.1f} s"
            line += f"; queue {report.queue_depth}{oldest}"
        return line

    def close(self) -> None:
        if self._live:
            print(file=sys.stderr)  # the report starts on a line of its own
        if self._metrics is not None:
            self._metrics.close()


class _Metrics:
    """The follower's metrics, served on their own registry at http://host:port/metrics."""

    def __init__(self, table: str, port: int, host: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        registry = CollectorRegistry()
        labels = ["table"]

        def counter(name: str, help_text: str) -> Any:
            return Counter(name, help_text, labels, registry=registry).labels(table)

        def gauge(name: str, help_text: str) -> Any:
            return Gauge(name, help_text, labels, registry=registry).labels(table)

        self.counters = {
            "rows": counter("embedlib_rows_embedded", "rows whose vector was written"),
            "encoded": counter("embedlib_texts_encoded", "distinct texts run through the model"),
            "removed": counter("embedlib_rows_removed", "vectors removed: their rows were deleted"),
            "failed": counter("embedlib_rows_failed", "rows whose text failed to embed (the errors table)"),
            "reconnects": counter("embedlib_reconnects", "database connections lost and made again"),
        }
        self.runs = counter("embedlib_runs", "runs made by the follower")
        self.queue_depth = gauge("embedlib_queue_depth", "changes waiting in a tracked table's queue")
        self.lag = gauge("embedlib_lag_seconds", "how long the oldest waiting change has waited")
        self.run_seconds = gauge("embedlib_last_run_seconds", "how long the last run took")
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:  # the port is taken, the address is not this machine's, ...
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def update(self, report: IngestReport) -> None:
        for name, counter in self.counters.items():
            counter.inc(getattr(report, name))
        self.runs.inc()
        self.queue_depth.set(report.queue_depth or 0)
        self.lag.set(report.queue_age_s or 0.0)
        self.run_seconds.set(report.seconds)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
