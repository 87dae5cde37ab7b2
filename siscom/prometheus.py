"""The registry's metrics in Prometheus form, for ``GET /metrics``.

Every member of :class:`siscom.metric_names.Metric` becomes one Prometheus metric under the prefix
``siscom_``: a counter ``siscom_<name>_total``, a gauge ``siscom_<name>``, and the one timer
(``latency``) a histogram ``siscom_latency_seconds`` with buckets from 5 ms to 10 s.

One process serving alone keeps its values in memory, in a registry of its own (no directory, no
global state). Under ``siscom serve --workers N`` every worker is started with
``PROMETHEUS_MULTIPROC_DIR`` pointing at a directory the parent made for that run, and
prometheus_client keeps each value in a memory-mapped file there, one file per process and type;
a scrape answered by any worker reads every worker's files and adds them up. How each gauge
combines over workers is :data:`GAUGE_ACROSS_WORKERS`.

prometheus_client 0.26 rules this relies on (values.py, multiprocess.py):

- ``values.ValueClass`` is chosen once, when ``prometheus_client.values`` is first imported,
  from ``PROMETHEUS_MULTIPROC_DIR``: the variable must be in the worker's environment before it
  starts, which is why the parent sets it rather than the worker.
- In that mode the metric objects must not be registered in the registry that is rendered (the
  :class:`~prometheus_client.multiprocess.MultiProcessCollector` reads their values back from the
  files), and the directory must be empty at start: files of an earlier run would be added in.
- Counters and histograms of a process that died stay in the sums (totals since the start of the
  run); ``mark_process_dead(pid)`` removes only its ``live*`` gauges.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from siscom.metric_names import Kind, Metric

__all__ = [
    "GAUGE_ACROSS_WORKERS",
    "LATENCY_BUCKETS",
    "PREFIX",
    "PrometheusMetrics",
    "exposed_name",
    "prometheus_table",
]

PREFIX = "siscom_"

#: Record-to-frame latency buckets, in seconds: a live map cares from a few ms to several s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The multiprocess modes of prometheus_client's gauges this module uses.
GaugeMode = Literal["livesum", "livemax", "livemin"]

#: prometheus_client's multiprocess mode of each gauge, with what it means to an operator.
GAUGE_ACROSS_WORKERS: dict[Metric, tuple[GaugeMode, str]] = {
    # Each worker holds its own clients: the server's streams are the sum.
    Metric.CONNECTIONS: ("livesum", "sum over live workers"),
    # Each worker reads every partition itself: the lag that matters is the worst worker's.
    Metric.PARTITION_LAG: ("livemax", "largest of the live workers"),
    # Each worker runs its own event loop: the one that matters is the latest.
    Metric.LOOP_LAG: ("livemax", "largest of the live workers"),
    # Each worker runs its own replays: the server's are the sum.
    Metric.REPLAYS_RUNNING: ("livesum", "sum over live workers"),
    Metric.REPLAYS_WAITING: ("livesum", "sum over live workers"),
    # Each worker keeps its own window: the shortest and the youngest are what a resume can count on.
    Metric.WINDOW_RECORDS: ("livemin", "smallest of the live workers"),
    # Each worker warms up by itself: the server is warm when its slowest worker is.
    Metric.WARMUP_PARTITIONS_LEFT: ("livemax", "largest of the live workers"),
    Metric.WARMUP_SECONDS: ("livemax", "largest of the live workers"),
    Metric.WINDOW_AGE_SECONDS: ("livemin", "smallest of the live workers"),
}


def exposed_name(metric: Metric) -> str:
    """The sample name a scrape shows for ``metric``."""
    if metric.kind is Kind.COUNTER:
        return f"{PREFIX}{metric}_total"
    if metric.kind is Kind.TIMER:
        return f"{PREFIX}{metric}_seconds"
    return f"{PREFIX}{metric}"


def _type(metric: Metric) -> str:
    if metric.kind is Kind.GAUGE:
        return f"gauge ({GAUGE_ACROSS_WORKERS[metric][1]})"
    return {Kind.COUNTER: "counter (sum)", Kind.TIMER: "histogram (sum)"}[metric.kind]


def prometheus_table() -> str:
    """The table of Prometheus names in docs/metrics.md, generated from the registry."""
    rows = ["| Prometheus metric | type (over workers) | stats / StatsD name |", "| --- | --- | --- |"]
    rows += [f"| `{exposed_name(metric)}` | {_type(metric)} | `{metric}` |" for metric in Metric]
    return "\n".join(rows) + "\n"


class PrometheusMetrics:
    """One process's Prometheus metrics, one per :class:`~siscom.metrics.Metric` member."""

    def __init__(self) -> None:
        #: True when prometheus_client writes values to PROMETHEUS_MULTIPROC_DIR (see above).
        self.multiprocess: bool = values.ValueClass._multiprocess
        self.registry = CollectorRegistry()
        own = None if self.multiprocess else self.registry
        self._counters: dict[Metric, Counter] = {}
        self._gauges: dict[Metric, Gauge] = {}
        self._histograms: dict[Metric, Histogram] = {}
        for metric in Metric:
            name = PREFIX + metric
            if metric.kind is Kind.COUNTER:
                self._counters[metric] = Counter(name, metric.help, registry=own)
            elif metric.kind is Kind.GAUGE:
                mode = GAUGE_ACROSS_WORKERS[metric][0]
                self._gauges[metric] = Gauge(name, metric.help, registry=own, multiprocess_mode=mode)
            else:
                self._histograms[metric] = Histogram(
                    name + "_seconds", metric.help, registry=own, buckets=LATENCY_BUCKETS
                )
        if self.multiprocess:
            MultiProcessCollector(self.registry)

    def incr(self, metric: Metric, count: int) -> None:
        self._counters[metric].inc(count)

    def gauge(self, metric: Metric, value: float) -> None:
        self._gauges[metric].set(value)

    def timing(self, metric: Metric, milliseconds: float) -> None:
        self._histograms[metric].observe(milliseconds / 1000)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type (OpenMetrics when the scraper asks for it)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
