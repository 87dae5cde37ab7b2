"""Counters the service keeps about itself, mirrored to StatsD when configured.

Every metric the service publishes is a member of :class:`Metric`: its name in the stats
endpoint, in StatsD (prefixed) and in the README's table, its kind and what it counts. Code
counts with the members, never with string literals, so a metric cannot exist without its
documentation.

One :class:`Metrics` object is made per process by the gateway and handed to every actor that
counts something. The in-process totals feed ``/api/v1/stream/stats``; StatsD gets the same
increments as they happen, and so do the Prometheus metrics of ``GET /metrics``
(:mod:`siscom.prometheus`). Callers count per batch, not per frame, so the hot path pays one call
per batch.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import statsd

    from siscom.prometheus import PrometheusMetrics

logger = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    TIMER = "timer (ms)"


class Metric(enum.StrEnum):
    """The registry of metric names (a member is its name, as a ``str``)."""

    kind: Kind
    help: str

    def __new__(cls, name: str, kind: Kind, help: str) -> Metric:
        member = str.__new__(cls, name)
        member._value_ = name
        member.kind = kind
        member.help = help
        return member

    CONNECTIONS = "connections", Kind.GAUGE, "open streams, sent at every open and close"
    RECORDS = "records", Kind.COUNTER, "records read from Kafka, both topics, malformed ones included"
    ALERTS = "alerts", Kind.COUNTER, "records of `KAFKA_ALERTS_TOPIC`"
    MALFORMED_RECORDS = (
        "malformed_records", Kind.COUNTER,
        "records skipped as malformed (not UTF-8, not JSON, no device id or a bad one, too large)",
    )
    UNPLACED_RECORDS = (
        "unplaced_records", Kind.COUNTER,
        "position records without a valid position: in no `bbox`, still sent to streams without one",
    )
    FRAMES_SENT = "frames_sent", Kind.COUNTER, "frames written to clients: positions, alerts, pings, acks, errors"
    CONFLATED = (
        "conflated", Kind.COUNTER,
        "positions a lagging client skipped because a newer one of the same device replaced them",
    )
    SLOW_CLIENT_CLOSES = "slow_client_closes", Kind.COUNTER, "clients closed with 1013 (SSE: a final error event) for not keeping up"
    BROKER_RECONNECTS = "broker_reconnects", Kind.COUNTER, "times the broker was reached again after being lost"
    CONNECTIONS_OPENED = "connections_opened", Kind.COUNTER, "streams started"
    CONNECTIONS_CLOSED = "connections_closed", Kind.COUNTER, "streams ended, whichever way"
    REJECTED_REQUESTS = (
        "rejected_requests", Kind.COUNTER,
        "streams refused for a bad query (1008; SSE: 400), or for bytes sent before the handshake completed (400)",
    )
    ORIGIN_REFUSALS = "origin_refusals", Kind.COUNTER, "handshakes refused for their origin (403)"
    CONNECTION_LIMIT_REFUSALS = (
        "connection_limit_refusals", Kind.COUNTER,
        "streams refused past `STREAM_MAX_CONNECTIONS` or `STREAM_MAX_CONNECTIONS_PER_IP` (1013; SSE: 503)",
    )
    AUTH_FAILURES = "auth_failures", Kind.COUNTER, "requests without a valid token"
    FORBIDDEN_REQUESTS = "forbidden_requests", Kind.COUNTER, "requests for devices the token does not grant"
    TOKEN_EXPIRIES = "token_expiries", Kind.COUNTER, "streams closed because their token expired"
    TOO_MANY_MESSAGES = (
        "too_many_messages", Kind.COUNTER,
        "clients closed with 1008 for sending messages, pings or pongs faster than their limits",
    )
    SUBSCRIPTION_LIMIT_REFUSALS = (
        "subscription_limit_refusals", Kind.COUNTER,
        "subscriptions refused past `STREAM_MAX_SUBSCRIBED_IDS` (1013)",
    )
    OVERLOAD_CLOSES = (
        "overload_closes", Kind.COUNTER,
        "clients with the largest backlogs closed with 1013 while the event loop lagged (shedding)",
    )
    HANDSHAKE_RATE_REFUSALS = (
        "handshake_rate_refusals", Kind.COUNTER,
        "handshakes refused past `STREAM_HANDSHAKES_PER_SECOND_PER_IP` (429)",
    )
    LOOP_LAG = (
        "loop_lag", Kind.GAUGE,
        "how late the event loop ran a timer, in ms, the worst of each second (with shedding on)",
    )
    TOKEN_REFRESHES = (
        "token_refreshes", Kind.COUNTER, "new tokens accepted on an open stream (its expiry moved)",
    )
    TOKEN_REFRESH_REFUSALS = (
        "token_refresh_refusals", Kind.COUNTER,
        "new tokens refused on an open stream (not valid, or not granting its devices; the old expiry stands)",
    )
    PARTITION_LAG = (
        "partition_lag", Kind.GAUGE,
        "records in the broker not yet read, all partitions together, every second",
    )
    RESUMES_RECOVERED = (
        "resumes_recovered", Kind.COUNTER,
        "streams opened with a cursor or since that got everything they missed (resumed: true)",
    )
    RESUMES_NOT_RECOVERED = (
        "resumes_not_recovered", Kind.COUNTER,
        "streams opened with a cursor that could not be honoured (resumed: false, then the snapshot)",
    )
    REPLAYED_RECORDS = "replayed_records", Kind.COUNTER, "records sent to resuming clients from before they connected"
    REPLAYS_RUNNING = (
        "replays_running", Kind.GAUGE,
        "replays (resumes with cursor or since) running now, at most `STREAM_REPLAY_CONCURRENCY`",
    )
    REPLAYS_WAITING = (
        "replays_waiting", Kind.GAUGE, "resumes waiting for their turn to replay",
    )
    REPLAY_WAIT_REFUSALS = (
        "replay_wait_refusals", Kind.COUNTER,
        "resumes not replayed (resumed: false) after waiting `STREAM_REPLAY_WAIT_SECONDS` for a turn",
    )
    REPLAY_COST_REFUSALS = (
        "replay_cost_refusals", Kind.COUNTER,
        "resumes not replayed (resumed: false) for being more than `STREAM_REPLAY_MAX_RECORDS` behind",
    )
    HISTORY_READS = (
        "history_reads", Kind.COUNTER,
        "reads of one partition's log for replays older than the window (concurrent replays share one)",
    )
    WINDOW_RECORDS = "window_records", Kind.GAUGE, "records in the recent-records window, every second"
    WINDOW_AGE_SECONDS = (
        "window_age_seconds", Kind.GAUGE,
        "age of the oldest record in the recent-records window (its Kafka timestamp), every second",
    )
    LATENCY = (
        "latency", Kind.TIMER,
        "from a record's Kafka timestamp to its frame being handed to the clients, one sample per batch "
        "(the producer's clock and the gateway's must agree)",
    )


def metrics_table() -> str:
    """The README's table of metrics, generated from the registry."""
    rows = ["| metric | type | what it counts |", "| --- | --- | --- |"]
    rows += [f"| `{metric}` | {metric.kind} | {metric.help} |" for metric in Metric]
    return "\n".join(rows) + "\n"


class Metrics:
    """Process-wide counters and gauges, also kept as Prometheus metrics and optionally sent to StatsD."""

    def __init__(self, client: statsd.StatsClient | None = None) -> None:
        from siscom.prometheus import PrometheusMetrics  # it builds on Metric, defined above

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
