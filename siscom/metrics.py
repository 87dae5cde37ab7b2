"""Counters the service keeps about itself, mirrored to StatsD when configured.

What is counted is named by the registry, :class:`~siscom.metric_names.Metric` (re-exported
here): code counts with its members, never with string literals.

One :class:`Metrics` object is made per process by the gateway and handed to every actor that
counts something. The in-process totals feed ``/api/v1/stream/stats``; StatsD gets the same
increments as they happen, and so do the Prometheus metrics of ``GET /metrics``
(:mod:`siscom.prometheus`). Callers count per batch, not per frame, so the hot path pays one call
per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from siscom.metric_names import Kind, Metric, metrics_table
from siscom.prometheus import PrometheusMetrics

if TYPE_CHECKING:
    import statsd

__all__ = ["Kind", "Metric", "Metrics", "metrics_table"]

logger = logging.getLogger(__name__)


class Metrics:
    """Process-wide counters and gauges, also kept as Prometheus metrics and optionally sent to StatsD."""

    def __init__(self, client: statsd.StatsClient | None = None) -> None:
        self._client = client
        #: The same counts for ``GET /metrics``.
        self.prometheus: PrometheusMetrics = PrometheusMetrics()
        #: Every counter and gauge is in the stats from the start, not from its first change.
        self.counters: Counter[str] = Counter({m.value: 0 for m in Metric if m.kind is Kind.COUNTER})
        self.gauges: dict[str, float] = {m.value: 0 for m in Metric if m.kind is Kind.GAUGE}

    @classmethod
    def from_settings(cls, host: str | None, port: int, prefix: str) -> Metrics:
        """Metrics that also report to StatsD at ``host:port``, or only in-process without a host."""
        if not host:
            return cls()
        import statsd

        try:
            client = statsd.StatsClient(host, port, prefix=prefix or None)
        except OSError as error:  # the name does not resolve: keep serving, count locally
            logger.warning("StatsD disabled: cannot use %s:%s (%s)", host, port, error)
            return cls()
        return cls(client)

    def incr(self, name: Metric, count: int = 1) -> None:
        self.counters[name] += count
        self.prometheus.incr(name, count)
        if self._client is not None:
            self._client.incr(name, count)

    def gauge(self, name: Metric, value: float) -> None:
        self.gauges[name] = value
        self.prometheus.gauge(name, value)
        if self._client is not None:
            self._client.gauge(name, value)

    def timing(self, name: Metric, milliseconds: float) -> None:
        self.prometheus.timing(name, milliseconds)
        if self._client is not None:
            self._client.timing(name, milliseconds)

    def stream_opened(self) -> None:
        self.incr(Metric.CONNECTIONS_OPENED)
        self.gauge(Metric.CONNECTIONS, self.open_streams)

    def stream_closed(self) -> None:
        self.incr(Metric.CONNECTIONS_CLOSED)
        self.gauge(Metric.CONNECTIONS, self.open_streams)

    @property
    def open_streams(self) -> int:
        """Sessions started and not yet finished, however they ended."""
        return self.counters[Metric.CONNECTIONS_OPENED] - self.counters[Metric.CONNECTIONS_CLOSED]

    def snapshot(self) -> dict[str, float]:
        """Current totals, for the stats endpoint."""
        return {**self.counters, **self.gauges}
