"""Counters the service keeps about itself, mirrored to StatsD when configured.

One :class:`Metrics` object is made per process by the gateway and handed to every actor that
counts something. The in-process totals feed ``/api/v1/stream/stats``; StatsD gets the same
increments as they happen. Callers count per batch, not per frame, so the hot path pays one call
per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import statsd

logger = logging.getLogger(__name__)

#: Counter names, as published in stats and (prefixed) in StatsD.
COUNTERS = (
    "records",
    "alerts",
    "malformed_records",
    "frames_sent",
    "conflated",
    "slow_client_closes",
    "broker_reconnects",
    "connections_opened",
    "connections_closed",
    "rejected_requests",
)


class Metrics:
    """Process-wide counters and gauges, optionally forwarded to StatsD over UDP."""

    def __init__(self, client: statsd.StatsClient | None = None) -> None:
        self._client = client
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.gauges: dict[str, float] = {"connections": 0}

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

    def incr(self, name: str, count: int = 1) -> None:
        self.counters[name] += count
        if self._client is not None:
            self._client.incr(name, count)

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value
        if self._client is not None:
            self._client.gauge(name, value)

    def timing(self, name: str, milliseconds: float) -> None:
        if self._client is not None:
            self._client.timing(name, milliseconds)

    def stream_opened(self) -> None:
        self.incr("connections_opened")
        self.gauge("connections", self.open_streams)

    def stream_closed(self) -> None:
        self.incr("connections_closed")
        self.gauge("connections", self.open_streams)

    @property
    def open_streams(self) -> int:
        """Sessions started and not yet finished, however they ended."""
        return self.counters["connections_opened"] - self.counters["connections_closed"]

    def snapshot(self) -> dict[str, float]:
        """Current totals, for the stats endpoint."""
        return {**self.counters, **self.gauges}
