"""The registry of metric names: what each counts and of which kind.

Every metric the service publishes is a member of :class:`Metric`: its name in the stats
endpoint, in StatsD (prefixed), in Prometheus and in the documentation's table, its kind and what
it counts. Code counts with the members, never with string literals, so a metric cannot exist
without its documentation.

A module of its own, below both :mod:`siscom.metrics` (the counting) and
:mod:`siscom.prometheus` (the Prometheus form), so that each of those imports the names and
neither imports the other for them.
"""

from __future__ import annotations

import enum

__all__ = ["Kind", "Metric", "metrics_table"]


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
        "malformed_records",
        Kind.COUNTER,
        "records skipped as malformed (not UTF-8, not JSON, no device id or a bad one, too large)",
    )
    UNPLACED_RECORDS = (
        "unplaced_records",
        Kind.COUNTER,
        "position records without a valid position: in no `bbox`, still sent to streams without one",
    )
    FRAMES_SENT = "frames_sent", Kind.COUNTER, "frames written to clients: positions, alerts, pings, acks, errors"
    CONFLATED = (
        "conflated",
        Kind.COUNTER,
        "positions a lagging client skipped because a newer one of the same device replaced them",
    )
    SLOW_CLIENT_CLOSES = (
        "slow_client_closes",
        Kind.COUNTER,
        "clients closed with 1013 (SSE: a final error event) for not keeping up",
    )
    BROKER_RECONNECTS = "broker_reconnects", Kind.COUNTER, "times the broker was reached again after being lost"
    CONNECTIONS_OPENED = "connections_opened", Kind.COUNTER, "streams started"
    CONNECTIONS_CLOSED = "connections_closed", Kind.COUNTER, "streams ended, whichever way"
    REJECTED_REQUESTS = (
        "rejected_requests",
        Kind.COUNTER,
        "streams refused for a bad query (1008; SSE: 400), or for bytes sent before the handshake completed (400)",
    )
    ORIGIN_REFUSALS = "origin_refusals", Kind.COUNTER, "handshakes refused for their origin (403)"
    CONNECTION_LIMIT_REFUSALS = (
        "connection_limit_refusals",
        Kind.COUNTER,
        "streams refused past `STREAM_MAX_CONNECTIONS` or `STREAM_MAX_CONNECTIONS_PER_IP` (1013; SSE: 503)",
    )
    AUTH_FAILURES = "auth_failures", Kind.COUNTER, "requests without a valid token"
    FORBIDDEN_REQUESTS = "forbidden_requests", Kind.COUNTER, "requests for devices the token does not grant"
    TOKEN_EXPIRIES = "token_expiries", Kind.COUNTER, "streams closed because their token expired"
    TOO_MANY_MESSAGES = (
        "too_many_messages",
        Kind.COUNTER,
        "clients closed with 1008 for sending messages, pings or pongs faster than their limits",
    )
    SUBSCRIPTION_LIMIT_REFUSALS = (
        "subscription_limit_refusals",
        Kind.COUNTER,
        "subscriptions refused past `STREAM_MAX_SUBSCRIBED_IDS` (1013)",
    )
    OVERLOAD_CLOSES = (
        "overload_closes",
        Kind.COUNTER,
        "clients that cost the most (of those with frames waiting) closed with 1013 while the event loop lagged "
        "(shedding)",
    )
    HANDSHAKE_RATE_REFUSALS = (
        "handshake_rate_refusals",
        Kind.COUNTER,
        "handshakes refused past `STREAM_HANDSHAKES_PER_SECOND_PER_IP` (429)",
    )
    LOOP_LAG = (
        "loop_lag",
        Kind.GAUGE,
        "how late the event loop ran a timer, in ms, the worst of each second (with shedding on)",
    )
    TOKEN_REFRESHES = (
        "token_refreshes",
        Kind.COUNTER,
        "new tokens accepted on an open stream (its expiry moved)",
    )
    TOKEN_REFRESH_REFUSALS = (
        "token_refresh_refusals",
        Kind.COUNTER,
        "new tokens refused on an open stream (not valid, or not granting its devices; the old expiry stands)",
    )
    PARTITION_LAG = (
        "partition_lag",
        Kind.GAUGE,
        "records in the broker not yet read, all partitions together, every second",
    )
    RESUMES_RECOVERED = (
        "resumes_recovered",
        Kind.COUNTER,
        "streams opened with a cursor or since that got everything they missed (resumed: true)",
    )
    RESUMES_NOT_RECOVERED = (
        "resumes_not_recovered",
        Kind.COUNTER,
        "streams opened with a cursor that could not be honoured (resumed: false, then the snapshot)",
    )
    REPLAYED_RECORDS = "replayed_records", Kind.COUNTER, "records sent to resuming clients from before they connected"
    REPLAYS_RUNNING = (
        "replays_running",
        Kind.GAUGE,
        "replays (resumes with cursor or since) running now, at most `STREAM_REPLAY_CONCURRENCY`",
    )
    REPLAYS_WAITING = (
        "replays_waiting",
        Kind.GAUGE,
        "resumes waiting for their turn to replay",
    )
    REPLAY_WAIT_REFUSALS = (
        "replay_wait_refusals",
        Kind.COUNTER,
        "resumes not replayed (resumed: false) after waiting `STREAM_REPLAY_WAIT_SECONDS` for a turn",
    )
    REPLAY_COST_REFUSALS = (
        "replay_cost_refusals",
        Kind.COUNTER,
        "resumes not replayed (resumed: false) for being more than `STREAM_REPLAY_MAX_RECORDS` behind",
    )
    HISTORY_READS = (
        "history_reads",
        Kind.COUNTER,
        "reads of one partition's log for replays older than the window (concurrent replays share one)",
    )
    WARMUP_RECORDS = (
        "warmup_records",
        Kind.COUNTER,
        "records read at start to warm the snapshot and the window (`STREAM_SNAPSHOT_LOOKBACK_SECONDS`, "
        "`KAFKA_SNAPSHOT_TOPIC`); never sent as live frames",
    )
    WARMUP_PARTITIONS_LEFT = (
        "warmup_partitions_left",
        Kind.GAUGE,
        "partitions the warm-up has not yet read to the end it found at start (0 once warm)",
    )
    WARMUP_SECONDS = "warmup_seconds", Kind.GAUGE, "how long the warm-up took, from its start to ready"
    WINDOW_RECORDS = "window_records", Kind.GAUGE, "records in the recent-records window, every second"
    WINDOW_AGE_SECONDS = (
        "window_age_seconds",
        Kind.GAUGE,
        "age of the oldest record in the recent-records window (its Kafka timestamp), every second",
    )
    LATENCY = (
        "latency",
        Kind.TIMER,
        "from a record's Kafka timestamp to its frame being handed to the clients, one sample per batch "
        "(the producer's clock and the gateway's must agree)",
    )


def metrics_table() -> str:
    """The table of metrics in docs/metrics.md, generated from the registry."""
    rows = ["| metric | type | what it counts |", "| --- | --- | --- |"]
    rows += [f"| `{metric}` | {metric.kind} | {metric.help} |" for metric in Metric]
    return "\n".join(rows) + "\n"
