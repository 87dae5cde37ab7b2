"""Load runs, shared by the steady, capacity and overload scenarios: one server, its clients and a
producer at a fixed rate, measured over windows, and the table rows that show the figures."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from bench.clients import ClientPool, LoopLagProbe, PoolReport, Subscription
from bench.probe import BrokerProbe
from bench.producer import FixedRateProducer, Window
from bench.report import Result, Row
from bench.scenarios.harness import MB, Bench, Shape, wait_connections
from bench.servers import HOST, ResourceSampler, ServerUnderTest, Target, cpu_seconds
from bench.stats import summary


@dataclass
class LoadFigures:
    rate: float
    offered_records_s: float
    offered_deliveries_s: float
    delivered_s: float
    expected: int
    delivered: int
    delivery_ratio: float
    latency_ms: dict[str, float | None]
    worst_client_p99_ms: float | None
    clients_complete: int
    cpu_percent: float
    rss_start_mb: float
    #: RSS halfway through the window: once the outboxes have filled, memory should stay put.
    rss_mid_mb: float
    rss_end_mb: float
    rss_max_mb: float
    close_codes: dict[int, int]
    server_counters: dict[str, float]
    #: CPU used by the rest of the machine's load in the window: broker, clients, harness.
    other_cpu_percent: dict[str, float]
    age_first_p99_ms: float | None = None
    age_last_p99_ms: float | None = None
    #: TCP segments the server sent in the window per frame delivered (see ServerUnderTest.segments_out).
    segments_per_delivery: float | None = None
    #: Bytes the server sent in the window (TCP payload: frames with their headers) per frame delivered.
    bytes_per_delivery: float | None = None
    #: Clients whose keep-alives all came on time in the window (when the scenario checks them).
    keepalives_on_time: int | None = None
    clients: int = 0
    #: Server RSS before any client connected, and per connection once they all had.
    rss_before_clients_mb: float | None = None
    kb_per_connection: float | None = None
    #: Frames other than positions and keep-alives (a map client's ``leave`` frames, acks).
    other_frames: int = 0
    #: Age of the window's records when a bare Kafka consumer in the harness got them: the
    #: producer, broker and fetch part of every latency, below any server (see bench.probe).
    floor_ms: dict[str, float | None] | None = None
    #: How late the client processes' and the harness's event loops ran a 5 ms timer: what the
    #: load generator adds to the latencies it measures.
    client_loop_lag_ms: dict[str, float | None] | None = None
    harness_loop_lag_ms: dict[str, float | None] | None = None
    #: How long after data reached a client's socket the client read it: what timing frames at
    #: read (as the clients did before they took the kernel's stamp) would add to every latency.
    client_read_delay_ms: dict[str, float | None] | None = None
    #: The server's garbage collections in the window (bench/gcprobe): count of full ones,
    #: the longest pause of any, and their total time, which stops the event loop.
    gc_full_collections: int | None = None
    gc_max_pause_ms: float | None = None
    gc_total_ms: float | None = None
    #: The clients' open streams by transport (``websocket``, ``sse``), as the client processes ran them.
    client_transports: dict[str, int] = field(default_factory=dict)

    @property
    def cpu_us_per_delivery(self) -> float | None:
        """Server CPU time per frame delivered: what a delivery costs, whatever the load."""
        return 1e4 * self.cpu_percent / self.delivered_s if self.delivered_s else None

    def sustained(self, max_p99_ms: float, min_ratio: float = 0.999) -> bool:
        p99 = self.latency_ms["p99"]
        return self.delivery_ratio >= min_ratio and p99 is not None and p99 <= max_p99_ms

    @property
    def rss_flat(self) -> bool:
        """The server's RSS grew by at most 5 MB or 5 % over the window's second half."""
        return self.rss_end_mb - self.rss_mid_mb <= max(5.0, 0.05 * self.rss_mid_mb)


class LoadRun:
    """One server, its clients and a producer, kept up across several measured windows."""

    def __init__(
        self,
        bench: Bench,
        target: Target,
        shape: Shape,
        label: str,
        *,
        moving: bool = False,
        subscribe: Callable[[FixedRateProducer], list[Subscription]] | None = None,
        **env: str,
    ) -> None:
        """``moving``: the producer sends the simulator's tracks (see :class:`FixedRateProducer`).
        ``subscribe``: the clients' subscriptions, given the producer; by default the shape's.
        ``env``: settings for the server, beside the harness's."""
        self.bench, self.target, self.shape, self.label = bench, target, shape, label
        self.moving, self.subscribe = moving, subscribe
        self.env = env
        self.rss_before_clients = 0
        self.rss_connected = 0
        self.server: ServerUnderTest | None = None
        self.pool: ClientPool | None = None
        self.producer: FixedRateProducer | None = None
        self.probe: BrokerProbe | None = None
        self.subscriptions: list[Subscription] = []

    async def __aenter__(self) -> LoadRun:
        bench, shape = self.bench, self.shape
        topic = await bench.topic(f"{self.label}-{self.target.name}")
        try:
            self.producer = FixedRateProducer(
                bench.broker.bootstrap, topic, shape.devices, seed=bench.options.seed, moving=self.moving
            )
            await self.producer.start()
            self.probe = BrokerProbe(bench.broker.bootstrap, topic)
            await self.probe.start()
            self.server = bench.server(self.target, topic, **self.env)
            await self.server.start()
            self.rss_before_clients = self.server.rss_bytes()
            if self.subscribe is not None:
                self.subscriptions = self.subscribe(self.producer)
            else:
                self.subscriptions = shape.subscriptions(self.producer.device_ids, bench.options.seed)
            self.pool = ClientPool(
                HOST,
                self.server.port,
                self.subscriptions,
                processes=bench.options.client_processes or shape.client_processes,
                concurrency=shape.connect_concurrency,
                deflate=self.target.deflate,
                transport=self.target.transport,
            )
            connected = await self.pool.start(timeout=max(120.0, len(self.subscriptions) / 20))
            if connected < len(self.subscriptions):
                raise RuntimeError(
                    f"only {connected} of {len(self.subscriptions)} clients connected: {dict(self.pool.errors)}"
                )
            await wait_connections(self.server, connected, timeout=max(30.0, len(self.subscriptions) / 100))
            self.rss_connected = self.server.rss_bytes()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            await self.pool.stop()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        if self.producer is not None:
            await self.producer.stop()
        if self.probe is not None:
            await self.probe.stop()

    async def measure(
        self,
        rate: float,
        *,
        duration: float | None = None,
        age_segment: float | None = None,
        keepalive: float | None = None,
    ) -> LoadFigures:
        """Warm up, produce for one window at ``rate``, let deliveries drain, and collect the figures."""
        assert self.server is not None and self.pool is not None and self.producer is not None
        shape, server = self.shape, self.server
        if duration is None:
            duration = self.bench.options.seconds or shape.duration
        await self.producer.run(rate, shape.warmup)
        self.producer.prepare(rate, duration)  # a moving fleet's tracks, outside the window
        counters_before = await _counters(server)
        others = {
            "broker": [self.bench.broker.pid or 0],
            "clients": self.pool.pids,
            "harness": [os.getpid()],
        }
        harness_lag = LoopLagProbe()
        harness_lag.start()
        async with ResourceSampler(server) as sampler:
            segments_before = await asyncio.to_thread(server.segments_out)
            cpu_before = server.cpu_seconds()
            others_before = {name: cpu_seconds(pids) for name, pids in others.items()}
            window = await self.producer.run(rate, duration)
            cpu_after = server.cpu_seconds()
            others_after = {name: cpu_seconds(pids) for name, pids in others.items()}
            segments_after = await asyncio.to_thread(server.segments_out)
        harness_lag.stop()
        await asyncio.sleep(shape.drain)
        counters_after = await _counters(server)
        report = await self.pool.report(window.t0_ms, window.t1_ms)
        figures = load_figures(rate, window, report, cpu_after - cpu_before, sampler.samples)
        figures.server_counters = _counter_delta(counters_before, counters_after)
        figures.other_frames = report.others
        if self.probe is not None:
            figures.floor_ms = summary(self.probe.window(window.t0_ms, window.t1_ms))
        figures.client_loop_lag_ms = summary(report.loop_lags)
        figures.client_read_delay_ms = summary(report.read_lags)
        pauses = server.gc_pauses(window.t0_ms / 1000.0, window.t1_ms / 1000.0)
        if pauses is not None:
            figures.gc_full_collections = sum(generation == 2 for generation, _ in pauses)
            figures.gc_max_pause_ms = 1000.0 * max((seconds for _, seconds in pauses), default=0.0)
            figures.gc_total_ms = 1000.0 * sum(seconds for _, seconds in pauses)
        figures.harness_loop_lag_ms = summary(harness_lag.window(window.t0_ms, window.t1_ms, True))
        figures.client_transports = dict(report.transports)
        figures.other_cpu_percent = {
            name: 100.0 * (others_after[name] - others_before[name]) / window.seconds for name in others
        }
        if age_segment is not None:
            figures.age_first_p99_ms, figures.age_last_p99_ms = _segment_ages(report, window, age_segment)
        if segments_before is not None and segments_after is not None and figures.delivered:
            # Frames of the window may still arrive in the drain; segments are counted in the window.
            # They are summed over the open connections: clients closed in the window take their
            # segments out of the second count (an undercount; no figure when it goes negative).
            sent = segments_after[0] - segments_before[0]
            figures.segments_per_delivery = sent / figures.delivered if sent >= 0 else None
            sent = segments_after[1] - segments_before[1]
            figures.bytes_per_delivery = sent / figures.delivered if sent >= 0 else None
        if keepalive is not None:
            wanted = math.floor(window.seconds / keepalive)
            late_after = keepalive + max(1.0, 0.2 * keepalive)
            figures.keepalives_on_time = sum(
                client.pings >= wanted and (client.max_ping_gap or 0.0) <= late_after for client in report.clients
            )
        figures.clients = len(report.clients)
        figures.rss_before_clients_mb = self.rss_before_clients / MB
        figures.kb_per_connection = (self.rss_connected - self.rss_before_clients) / 1024 / max(len(report.clients), 1)
        return figures


def load_figures(
    rate: float, window: Window, report: PoolReport, cpu: float, rss: list[tuple[float, int]]
) -> LoadFigures:
    seconds = window.seconds
    expected_each = [window.expected(devices) for devices in report.subscriptions]
    expected = sum(expected_each)
    delivered = sum(client.received for client in report.clients)
    worst = [client.age_p99 for client in report.clients if client.age_p99 is not None]
    rss_values = [value for _, value in rss] or [0]
    return LoadFigures(
        rate=rate,
        offered_records_s=window.records / seconds,
        offered_deliveries_s=expected / seconds,
        delivered_s=delivered / seconds,
        expected=expected,
        delivered=delivered,
        delivery_ratio=delivered / expected if expected else 0.0,
        latency_ms=summary(report.ages),
        worst_client_p99_ms=max(worst) if worst else None,
        clients_complete=sum(client.received >= want for client, want in zip(report.clients, expected_each)),
        cpu_percent=100.0 * cpu / seconds,
        rss_start_mb=rss_values[0] / MB,
        rss_mid_mb=rss_values[len(rss_values) // 2] / MB,
        rss_end_mb=rss_values[-1] / MB,
        rss_max_mb=max(rss_values) / MB,
        close_codes=dict(report.close_codes),
        server_counters={},
        other_cpu_percent={},
    )


def _segment_ages(report: PoolReport, window: Window, seconds: float) -> tuple[float | None, float | None]:
    """p99 age of the frames whose records were produced in the first and in the last ``seconds``."""
    span = seconds * 1000.0
    first = [age for stamp, age in zip(report.stamps, report.ages) if stamp < window.t0_ms + span]
    last = [age for stamp, age in zip(report.stamps, report.ages) if stamp >= window.t1_ms - span]
    return summary(first)["p99"], summary(last)["p99"]


async def _counters(server: ServerUnderTest) -> dict[str, Any]:
    """The server's counters; none when a saturated server does not answer in time (its event
    loop is the thing being measured: a slow answer is a figure, not a failure of the run)."""
    try:
        return await server.stats(timeout=30.0)
    except (OSError, RuntimeError, ValueError):
        return {}


def _counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    return {
        name: after[name] - before.get(name, 0)
        for name in ("records", "frames_sent", "conflated", "slow_client_closes", "dropped")
        if isinstance(after.get(name), int | float)
    }


def _latency(figures: LoadFigures, name: str) -> float | None:
    return figures.latency_ms[name]


def load_rows(result: Result, figures: dict[str, LoadFigures]) -> None:
    """The rows every load scenario prints: throughput, latency, CPU and memory per server; and
    the figures themselves, for the JSON report."""
    result.figures = {name: asdict(f) for name, f in figures.items()}

    def row(
        label: str, unit: str, pick: Callable[[LoadFigures], Any], digits: int = 1, show_ratio: bool = True
    ) -> None:
        result.rows.append(Row(label, {name: pick(f) for name, f in figures.items()}, unit, digits, show_ratio))

    row("produced", "rec/s", lambda f: f.offered_records_s)
    row("deliveries offered", "/s", lambda f: f.offered_deliveries_s)
    row("delivered", "/s", lambda f: f.delivered_s)
    row("delivery ratio", "", lambda f: f.delivery_ratio, 4)
    for name in ("p50", "p95", "p99", "max"):
        row(f"latency {name}", "ms", partial(_latency, name=name))
    row("worst client p99", "ms", lambda f: f.worst_client_p99_ms)
    row("floor p99: bare Kafka consumer", "ms", lambda f: (f.floor_ms or {}).get("p99"), show_ratio=False)
    row("client loop lag p99", "ms", lambda f: (f.client_loop_lag_ms or {}).get("p99"), show_ratio=False)
    row("client loop lag max", "ms", lambda f: (f.client_loop_lag_ms or {}).get("max"), show_ratio=False)
    row("client read delay p99", "ms", lambda f: (f.client_read_delay_ms or {}).get("p99"), show_ratio=False)
    row("harness loop lag p99", "ms", lambda f: (f.harness_loop_lag_ms or {}).get("p99"), show_ratio=False)
    row("server GC: full collections", "", lambda f: f.gc_full_collections, 0, False)
    row("server GC: longest pause", "ms", lambda f: f.gc_max_pause_ms, show_ratio=False)
    row("server GC: total pause", "ms", lambda f: f.gc_total_ms, show_ratio=False)
    row("server CPU", "%", lambda f: f.cpu_percent)
    row("server CPU per delivery", "us", lambda f: f.cpu_us_per_delivery, 1)
    row("server TCP segments per delivery", "", lambda f: f.segments_per_delivery, 3)
    row("server bytes sent per delivery", "B", lambda f: f.bytes_per_delivery, 1)
    row("broker CPU", "%", lambda f: f.other_cpu_percent["broker"], show_ratio=False)
    row(
        "clients + producer CPU",
        "%",
        lambda f: f.other_cpu_percent["clients"] + f.other_cpu_percent["harness"],
        show_ratio=False,
    )
    row("server RSS start", "MB", lambda f: f.rss_start_mb)
    row("server RSS end", "MB", lambda f: f.rss_end_mb)
    row("server RSS max", "MB", lambda f: f.rss_max_mb)


async def measure_each(
    bench: Bench,
    targets: Sequence[Target],
    shape: Shape,
    label: str,
    *,
    env: dict[str, str] | None = None,
    **measure: Any,
) -> dict[str, LoadFigures]:
    """Each target in turn under the same load, one window each: their figures by target name.
    ``env``: settings for the servers; ``measure``: what :meth:`LoadRun.measure` takes besides the rate."""
    figures: dict[str, LoadFigures] = {}
    for target in targets:
        # moving and subscribe named, so that env's keys can only be settings
        async with LoadRun(bench, target, shape, label, moving=False, subscribe=None, **(env or {})) as run:
            figures[target.name] = await run.measure(shape.rate, **measure)
    return figures


def backlog_rows(figures: dict[str, LoadFigures], segment: float) -> list[Row]:
    """The rows of a scenario that offers more than a server can send: how old the data is at the
    end, whether memory grows, and what was conflated (or dropped) instead of queued."""
    return [
        Row(f"data age p99, last {segment:g} s", {n: f.age_last_p99_ms for n, f in figures.items()}, "ms"),
        Row(
            "RSS growth, 2nd half", {n: f.rss_end_mb - f.rss_mid_mb for n, f in figures.items()}, "MB", show_ratio=False
        ),
        Row(
            "conflated / dropped",
            {n: f.server_counters.get("conflated", f.server_counters.get("dropped")) for n, f in figures.items()},
            "frames",
            0,
            False,
        ),
    ]
