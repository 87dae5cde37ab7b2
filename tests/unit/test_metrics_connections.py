"""The ``connections`` gauge follows opens and closes, in-process and towards StatsD.

The stats endpoint derives its ``connections`` from the opened/closed counters, so only the
gauge itself shows whether a close is counted down; StatsD dashboards read the gauge.
"""

from __future__ import annotations

from siscom.metrics import Metric, Metrics


class RecordingStatsd:
    """Notes what would go out over UDP (the calls of ``statsd.StatsClient`` that Metrics makes)."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, float]] = []

    def incr(self, name: str, count: int = 1) -> None:
        pass

    def gauge(self, name: str, value: float) -> None:
        self.gauges.append((name, value))

    def timing(self, name: str, milliseconds: float) -> None:
        pass


def connections_sent(statsd: RecordingStatsd) -> list[float]:
    return [value for name, value in statsd.gauges if name == Metric.CONNECTIONS]


def test_the_connections_gauge_goes_up_on_open_and_down_on_close():
    statsd = RecordingStatsd()
    metrics = Metrics(statsd)

    metrics.stream_opened()
    metrics.stream_opened()
    metrics.stream_opened()
    assert metrics.gauges[Metric.CONNECTIONS] == 3
    metrics.stream_closed()
    metrics.stream_closed()
    assert metrics.gauges[Metric.CONNECTIONS] == 1
    metrics.stream_opened()
    metrics.stream_closed()
    metrics.stream_closed()

    assert metrics.gauges[Metric.CONNECTIONS] == 0
    assert metrics.snapshot()[Metric.CONNECTIONS] == 0
    assert connections_sent(statsd) == [1, 2, 3, 2, 1, 2, 1, 0]


def test_without_statsd_the_gauge_is_still_kept_for_the_stats():
    metrics = Metrics()
    assert metrics.gauges[Metric.CONNECTIONS] == 0
    metrics.stream_opened()
    metrics.stream_closed()
    metrics.stream_opened()
    assert metrics.gauges[Metric.CONNECTIONS] == 1 == metrics.open_streams
