"""The named scenarios: what load each one applies, what it measures, and the target it checks.

Every scenario runs each server under test in turn against the same private broker, on a topic
of its own, with the same clients and the same producer, and returns a :class:`~bench.report.Result`
whose rows hold one figure per server.

- ``steady``: 1,000 devices, 200 clients x 10 devices, 2,000 records/s. Target: every record
  delivered, p99 <= 50 ms.
- ``capacity``: 200 clients x 50 of 1,000 devices (10 deliveries per record), the rate raised in
  steps of 25 % until a step fails (delivery ratio < 0.999 or p99 > 100 ms, twice). Target: the
  gateway's highest sustained load is at least twice the baseline's.
- ``overload``: 100 clients each subscribed to every device, offered three times the gateway's
  capacity. Target: every client's p99 data age <= 1 s and RSS flat.
- ``idle``: 10,000 connections and no data. Target: every keep-alive on time and at most 30 KB of
  server memory per connection.
- ``pipeline``: no clients; a topic filled beforehand is read from the start. Target: at least
  100,000 records/s through consumer, decoder and router.
- ``flood`` (:mod:`bench.flood`): 50 clients x 10 devices at 1,000 records/s beside 0, 1 and 3
  clients flooding pings and subscribe messages. Target: canary p99 <= 250 ms with 3 flooders.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from siscom.dev.broker import TansuBroker, create_topics

from bench.clients import ClientPool, PoolReport, Subscription
from bench.producer import FixedRateProducer, Window, fill
from bench.report import Result, Row, Verdict
from bench.servers import (
    HOST,
    NAIVE,
    SISCOM,
    SISCOM_2_WORKERS,
    ResourceSampler,
    ServerUnderTest,
    Target,
    cpu_seconds,
)
from bench.stats import summary

MB = 1024 * 1024

#: Deliveries per second one gateway process sustained in the capacity scenario on the reference
#: machine (2 cores, shared with broker, producer and clients); overload offers three times this.
#: ``--rate`` overrides it for another machine.
REFERENCE_CAPACITY = 52_000


@dataclass(frozen=True)
class Options:
    workdir: Path
    smoke: bool = False
    #: Records per second, overriding the scenario's default (steady, overload).
    rate: float | None = None
    seed: int = 1
    #: Clients ask for permessage-deflate, as browsers do (the server then compresses per client).
    deflate: bool = False


@dataclass(frozen=True)
class Shape:
    """A load: who subscribes to what, and how fast records come."""

    devices: int
    clients: int
    #: Devices per client; ``None`` subscribes every client to every device.
    per_client: int | None
    rate: float
    warmup: float
    duration: float
    drain: float
    client_processes: int = 2

    def subscriptions(self, device_ids: Sequence[str], seed: int) -> list[Subscription]:
        if self.per_client is None:
            return [None] * self.clients
        rng = random.Random(seed)
        return [tuple(rng.sample(device_ids, self.per_client)) for _ in range(self.clients)]


class Bench:
    """What all scenarios share: the broker, a work directory for logs, and the options."""

    def __init__(self, broker: TansuBroker, options: Options) -> None:
        self.broker = broker
        self.options = options

    async def topic(self, label: str, partitions: int = 1) -> str:
        """A fresh topic. Runs never share one: tansu's memory storage slows down with every batch
        a topic holds, so a long-lived topic would make later runs pay for earlier ones."""
        name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        await create_topics(self.broker.bootstrap, {name: partitions})
        return name

    def server(self, target: Target, topic: str, **env: str) -> ServerUnderTest:
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "KAFKA_AUTO_OFFSET_RESET": "latest",
            **env,
        }
        log = self.options.workdir / f"{target.name}-{topic}.log"
        return ServerUnderTest(target, settings, log)


# Load runs: steady, capacity steps, overload


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

    @property
    def cpu_us_per_delivery(self) -> float | None:
        """Server CPU time per frame delivered: what a delivery costs, whatever the load."""
        return 1e4 * self.cpu_percent / self.delivered_s if self.delivered_s else None

    def sustained(self, max_p99_ms: float, min_ratio: float = 0.999) -> bool:
        p99 = self.latency_ms["p99"]
        return self.delivery_ratio >= min_ratio and p99 is not None and p99 <= max_p99_ms


class LoadRun:
    """One server, its clients and a producer, kept up across several measured windows."""

    def __init__(self, bench: Bench, target: Target, shape: Shape, label: str) -> None:
        self.bench, self.target, self.shape, self.label = bench, target, shape, label
        self.server: ServerUnderTest | None = None
        self.pool: ClientPool | None = None
        self.producer: FixedRateProducer | None = None
        self.subscriptions: list[Subscription] = []

    async def __aenter__(self) -> LoadRun:
        bench, shape = self.bench, self.shape
        topic = await bench.topic(f"{self.label}-{self.target.name}")
        try:
            self.producer = FixedRateProducer(bench.broker.bootstrap, topic, shape.devices, seed=bench.options.seed)
            await self.producer.start()
            self.server = bench.server(self.target, topic)
            await self.server.start()
            self.subscriptions = shape.subscriptions(self.producer.device_ids, bench.options.seed)
            self.pool = ClientPool(
                HOST, self.server.port, self.subscriptions, processes=shape.client_processes, deflate=bench.options.deflate
            )
            connected = await self.pool.start()
            if connected < len(self.subscriptions):
                raise RuntimeError(f"only {connected} of {len(self.subscriptions)} clients connected: {dict(self.pool.errors)}")
            await wait_connections(self.server, connected)
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

    async def measure(self, rate: float, *, duration: float | None = None, age_segment: float | None = None) -> LoadFigures:
        """Warm up, produce for one window at ``rate``, let deliveries drain, and collect the figures."""
        assert self.server is not None and self.pool is not None and self.producer is not None
        shape, server = self.shape, self.server
        duration = duration if duration is not None else shape.duration
        await self.producer.run(rate, shape.warmup)
        counters_before = await server.stats()
        others = {
            "broker": [self.bench.broker.pid or 0],
            "clients": self.pool.pids,
            "harness": [os.getpid()],
        }
        async with ResourceSampler(server) as sampler:
            cpu_before = server.cpu_seconds()
            others_before = {name: cpu_seconds(pids) for name, pids in others.items()}
            window = await self.producer.run(rate, duration)
            cpu_after = server.cpu_seconds()
            others_after = {name: cpu_seconds(pids) for name, pids in others.items()}
        await asyncio.sleep(shape.drain)
        counters_after = await server.stats()
        report = await self.pool.report(window.t0_ms, window.t1_ms)
        figures = load_figures(rate, window, report, cpu_after - cpu_before, sampler.samples)
        figures.server_counters = _counter_delta(counters_before, counters_after)
        figures.other_cpu_percent = {
            name: 100.0 * (others_after[name] - others_before[name]) / window.seconds for name in others
        }
        if age_segment is not None:
            figures.age_first_p99_ms, figures.age_last_p99_ms = _segment_ages(report, window, age_segment)
        return figures


def load_figures(rate: float, window: Window, report: PoolReport, cpu: float, rss: list[tuple[float, int]]) -> LoadFigures:
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


def _counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    return {
        name: after[name] - before.get(name, 0)
        for name in ("records", "frames_sent", "conflated", "slow_client_closes", "dropped")
        if isinstance(after.get(name), int | float)
    }


async def wait_connections(server: ServerUnderTest, count: int, timeout: float = 30.0) -> None:
    """Wait until the server counts ``count`` streams (only a single process can say so)."""
    if "--workers" in server.target.args:
        await asyncio.sleep(1.0)
        return
    deadline = time.monotonic() + timeout
    while (await server.stats()).get("connections", 0) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.target.name} never counted {count} connections")
        await asyncio.sleep(0.1)


def _load_rows(result: Result, figures: dict[str, LoadFigures]) -> None:
    def row(label: str, unit: str, pick: Callable[[LoadFigures], Any], digits: int = 1, show_ratio: bool = True) -> None:
        result.rows.append(Row(label, {name: pick(f) for name, f in figures.items()}, unit, digits, show_ratio))

    row("produced", "rec/s", lambda f: f.offered_records_s)
    row("deliveries offered", "/s", lambda f: f.offered_deliveries_s)
    row("delivered", "/s", lambda f: f.delivered_s)
    row("delivery ratio", "", lambda f: f.delivery_ratio, 4)
    for name in ("p50", "p95", "p99", "max"):
        row(f"latency {name}", "ms", lambda f, name=name: f.latency_ms[name])
    row("worst client p99", "ms", lambda f: f.worst_client_p99_ms)
    row("server CPU", "%", lambda f: f.cpu_percent)
    row("server CPU per delivery", "us", lambda f: f.cpu_us_per_delivery, 1)
    row("broker CPU", "%", lambda f: f.other_cpu_percent["broker"], show_ratio=False)
    row("clients + producer CPU", "%", lambda f: f.other_cpu_percent["clients"] + f.other_cpu_percent["harness"], show_ratio=False)
    row("server RSS start", "MB", lambda f: f.rss_start_mb)
    row("server RSS end", "MB", lambda f: f.rss_end_mb)
    row("server RSS max", "MB", lambda f: f.rss_max_mb)


# steady


async def steady(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=6 if smoke else 200,
        per_client=10,
        rate=bench.options.rate or (200.0 if smoke else 2000.0),
        warmup=0.3 if smoke else 2.0,
        duration=1.0 if smoke else 10.0,
        drain=0.5 if smoke else 2.0,
    )
    result = Result("steady", _shape_params(shape), [target.name for target in targets])
    figures: dict[str, LoadFigures] = {}
    for target in targets:
        async with LoadRun(bench, target, shape, "steady") as run:
            figures[target.name] = await run.measure(shape.rate)
    _load_rows(result, figures)
    result.figures = {name: asdict(f) for name, f in figures.items()}
    if "siscom" in figures:
        f = figures["siscom"]
        p99 = f.latency_ms["p99"]
        result.verdicts.append(
            Verdict(
                f"steady {shape.rate:,.0f} rec/s: 100% delivered, p99 <= 50 ms",
                f.delivered == f.expected and p99 is not None and p99 <= 50.0,
                f"{f.delivered:,} of {f.expected:,} delivered ({f.delivery_ratio:.2%}), p99 {_ms(p99)}",
            )
        )
    return result


# capacity


CAPACITY_STEP = 1.25
CAPACITY_MAX_P99_MS = 100.0


async def find_capacity(
    bench: Bench, target: Target, shape: Shape, limit: float
) -> tuple[LoadFigures | None, list[dict[str, Any]]]:
    """Raise the rate by 25 % a step until a step fails twice; then try once between the last two.

    Every attempt starts afresh (topic, server, clients), so no step inherits a backlog, a
    longer broker log or a warmer heap from the one before.
    """
    steps: list[dict[str, Any]] = []
    best: LoadFigures | None = None

    async def attempt(rate: float) -> LoadFigures | None:
        for trial in range(2):
            async with LoadRun(bench, target, shape, "capacity") as run:
                figures = await run.measure(rate)
            ok = figures.sustained(CAPACITY_MAX_P99_MS)
            steps.append({"rate": rate, "trial": trial, "sustained": ok, **_step_summary(figures)})
            print(f"   {target.name}: {rate:,.0f} rec/s -> {_step_line(figures)} {'ok' if ok else 'FAILED'}", flush=True)
            if ok:
                return figures
        return None

    rate = shape.rate
    failed_at = None
    while rate <= limit:
        figures = await attempt(rate)
        if figures is None:
            failed_at = rate
            break
        best = figures
        rate *= CAPACITY_STEP
    if best is not None and failed_at is not None:
        figures = await attempt(math.sqrt(best.rate * failed_at))
        if figures is not None:
            best = figures
    return best, steps


def _step_summary(f: LoadFigures) -> dict[str, Any]:
    return {
        "delivered_s": f.delivered_s,
        "delivery_ratio": f.delivery_ratio,
        "p99_ms": f.latency_ms["p99"],
        "cpu_percent": f.cpu_percent,
    }


def _step_line(f: LoadFigures) -> str:
    others = ", ".join(f"{name} {value:.0f}%" for name, value in f.other_cpu_percent.items())
    return (
        f"{f.delivered_s:,.0f} deliveries/s, ratio {f.delivery_ratio:.4f}, p99 {_ms(f.latency_ms['p99'])}, "
        f"server CPU {f.cpu_percent:.0f}% ({others})"
    )


async def capacity(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=6 if smoke else 200,
        per_client=10 if smoke else 50,
        rate=100.0 if smoke else 400.0,
        warmup=0.3 if smoke else 1.0,
        duration=1.0 if smoke else 5.0,
        drain=0.5 if smoke else 1.5,
    )
    limit = shape.rate if smoke else 20_000.0  # a smoke run tries one step
    result = Result("capacity", {**_shape_params(shape), "start": shape.rate, "step": CAPACITY_STEP}, [t.name for t in targets])
    best: dict[str, LoadFigures | None] = {}
    for target in targets:
        best[target.name], steps = await find_capacity(bench, target, shape, limit)
        result.figures[target.name] = {"best": asdict(best[target.name]) if best[target.name] else None, "steps": steps}

    def pick(getter: Callable[[LoadFigures], Any]) -> dict[str, Any]:
        return {name: (getter(f) if f is not None else None) for name, f in best.items()}

    result.rows += [
        Row("capacity (records)", pick(lambda f: f.offered_records_s), "rec/s", 0),
        Row("capacity (deliveries)", pick(lambda f: f.delivered_s), "/s", 0),
        Row("delivery ratio there", pick(lambda f: f.delivery_ratio), "", 4),
        Row("latency p50 there", pick(lambda f: f.latency_ms["p50"]), "ms"),
        Row("latency p99 there", pick(lambda f: f.latency_ms["p99"]), "ms"),
        Row("server CPU there", pick(lambda f: f.cpu_percent), "%"),
        Row("server CPU per delivery", pick(lambda f: f.cpu_us_per_delivery), "us"),
        Row("server RSS there", pick(lambda f: f.rss_max_mb), "MB"),
    ]
    ours, naive = best.get("siscom"), best.get("naive")
    if ours is not None and naive is not None:
        ratio = ours.delivered_s / naive.delivered_s
        result.verdicts.append(
            Verdict(
                "capacity, one process, >= 2x the naive baseline",
                ratio >= 2.0,
                f"{ours.delivered_s:,.0f} vs {naive.delivered_s:,.0f} deliveries/s: {ratio:.2f}x",
            )
        )
    result.notes.append(
        f"sustained = delivery ratio >= 0.999 and p99 <= {CAPACITY_MAX_P99_MS:.0f} ms; a step counts as failed after two tries"
    )
    return result


# overload


async def overload(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    clients = 6 if smoke else 100
    rate = bench.options.rate or (50.0 if smoke else 3 * REFERENCE_CAPACITY / clients)
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=clients,
        per_client=None,
        rate=rate,
        warmup=0.3 if smoke else 2.0,
        duration=1.0 if smoke else 20.0,
        drain=0.5 if smoke else 3.0,
    )
    segment = 0.5 if smoke else 5.0
    result = Result("overload", _shape_params(shape), [target.name for target in targets])
    figures: dict[str, LoadFigures] = {}
    for target in targets:
        async with LoadRun(bench, target, shape, "overload") as run:
            figures[target.name] = await run.measure(shape.rate, age_segment=segment)
    _load_rows(result, figures)
    result.rows += [
        Row(f"data age p99, first {segment:g} s", {n: f.age_first_p99_ms for n, f in figures.items()}, "ms"),
        Row(f"data age p99, last {segment:g} s", {n: f.age_last_p99_ms for n, f in figures.items()}, "ms"),
        Row("RSS growth, 2nd half", {n: f.rss_end_mb - f.rss_mid_mb for n, f in figures.items()}, "MB", show_ratio=False),
        Row("conflated / dropped", {n: f.server_counters.get("conflated", f.server_counters.get("dropped")) for n, f in figures.items()}, "frames", 0, False),
    ]
    result.figures = {name: asdict(f) for name, f in figures.items()}
    if "siscom" in figures:
        f = figures["siscom"]
        worst = f.worst_client_p99_ms
        growth = f.rss_end_mb - f.rss_mid_mb
        result.verdicts += [
            Verdict(
                "overload: every client's p99 data age <= 1 s",
                worst is not None and worst <= 1000.0,
                f"worst client p99 {_ms(worst)} at {f.offered_deliveries_s:,.0f} deliveries/s offered, "
                f"{f.delivered_s:,.0f}/s delivered",
            ),
            Verdict(
                "overload: RSS flat",
                growth <= max(5.0, 0.05 * f.rss_mid_mb),
                f"{f.rss_start_mb:.1f} MB at the start, {f.rss_mid_mb:.1f} MB halfway, {f.rss_end_mb:.1f} MB at the "
                f"end of {shape.duration:g} s (flat: the second half grows by at most 5 MB or 5%)",
            ),
        ]
    result.notes.append("data age = arrival at the client minus the producer's timestamp, of the frames that arrived")
    return result


# idle


async def idle(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    connections = 40 if smoke else 10_000
    keepalive = 1.0 if smoke else 5.0
    hold = 2.2 if smoke else 12.0
    params = {"connections": connections, "keepalive_s": keepalive, "hold_s": hold}
    result = Result("idle", params, [target.name for target in targets])
    figures: dict[str, dict[str, Any]] = {}
    for target in targets:
        topic = await bench.topic(f"idle-{target.name}")
        server = bench.server(target, topic, STREAM_KEEPALIVE_SECONDS=str(keepalive))
        pool = None
        try:
            await server.start()
            await asyncio.sleep(0.2 if smoke else 1.0)
            rss_before = server.rss_bytes()
            rng = random.Random(bench.options.seed)
            device_ids = [f"{800_000_000 + n:010d}" for n in range(1000)]
            subscriptions = [tuple(rng.sample(device_ids, 10)) for _ in range(connections)]
            pool = ClientPool(
                # Few handshakes in flight at once: a burst beyond the listen backlog costs
                # clients a SYN retransmission (seconds) and says nothing about idle streams.
                HOST, server.port, subscriptions, processes=1 if smoke else 4, concurrency=16,
                deflate=bench.options.deflate,
            )
            started = time.monotonic()
            connected = await pool.start(timeout=600.0)
            connect_seconds = time.monotonic() - started
            # Let every connection see its first keep-alive before measuring.
            await asyncio.sleep(keepalive * 1.2)
            cpu_before = server.cpu_seconds()
            t0_ms = time.time() * 1000.0
            await asyncio.sleep(hold)
            t1_ms = time.time() * 1000.0
            cpu = server.cpu_seconds() - cpu_before
            rss_after = server.rss_bytes()
            report = await pool.report(t0_ms, t1_ms)
        finally:
            if pool is not None:
                await pool.stop(timeout=30.0)
            await asyncio.to_thread(server.stop)
        wanted = math.floor(hold / keepalive)
        late_after = keepalive + max(1.0, 0.2 * keepalive)
        gaps = sorted(client.max_ping_gap for client in report.clients if client.max_ping_gap is not None)
        on_time = sum(
            client.pings >= wanted and (client.max_ping_gap or 0.0) <= late_after for client in report.clients
        )
        figures[target.name] = {
            "connected": connected,
            "connect_seconds": connect_seconds,
            "connect_errors": dict(pool.errors),
            "on_time": on_time,
            "pings_wanted_each": wanted,
            "max_ping_gap_s": gaps[-1] if gaps else None,
            "rss_before_mb": rss_before / MB,
            "rss_after_mb": rss_after / MB,
            "kb_per_connection": (rss_after - rss_before) / 1024 / max(connected, 1),
            "cpu_percent": 100.0 * cpu / ((t1_ms - t0_ms) / 1000.0),
            "close_codes": dict(report.close_codes),
        }

    def row(label: str, unit: str, key: str, digits: int = 1, show_ratio: bool = True) -> Row:
        return Row(label, {name: f[key] for name, f in figures.items()}, unit, digits, show_ratio)

    result.rows += [
        row("connected", "", "connected", 0, False),
        row("connect time", "s", "connect_seconds"),
        row("keep-alives on time", "clients", "on_time", 0, False),
        row("longest keep-alive gap", "s", "max_ping_gap_s", 2),
        row("server RSS before", "MB", "rss_before_mb"),
        row("server RSS connected", "MB", "rss_after_mb"),
        row("memory per connection", "KB", "kb_per_connection"),
        row("server CPU while idle", "%", "cpu_percent"),
    ]
    result.figures = figures
    if "siscom" in figures:
        f = figures["siscom"]
        result.verdicts += [
            Verdict(
                f"idle: {connections:,} connections, every keep-alive on time",
                f["connected"] == connections and f["on_time"] == connections,
                f"{f['connected']:,} connected, {f['on_time']:,} got >= {wanted} keep-alives with no gap over "
                f"{late_after:g} s (longest {f['max_ping_gap_s'] or 0:.2f} s)",
            ),
            Verdict(
                "idle: <= 30 KB server memory per connection",
                f["kb_per_connection"] <= 30.0,
                f"{f['kb_per_connection']:.1f} KB ({f['rss_before_mb']:.0f} -> {f['rss_after_mb']:.0f} MB)",
            ),
        ]
    return result


# pipeline


async def pipeline(bench: Bench, targets: Sequence[Target]) -> Result:
    records = 5_000 if bench.options.smoke else 1_000_000
    topic = await bench.topic("pipeline")
    filled = time.monotonic()
    await fill(bench.broker.bootstrap, topic, records)
    fill_seconds = time.monotonic() - filled
    result = Result("pipeline", {"records": records, "clients": 0}, [target.name for target in targets])
    figures: dict[str, dict[str, Any]] = {}
    for target in targets:
        server = bench.server(target, topic, KAFKA_AUTO_OFFSET_RESET="earliest")
        try:
            await server.start()
            figures[target.name] = await _read_through(server, records)
        finally:
            await asyncio.to_thread(server.stop)
    result.rows += [
        Row("records/s", {n: f["records_s"] for n, f in figures.items()}, "rec/s", 0),
        Row("server CPU", {n: f["cpu_percent"] for n, f in figures.items()}, "%"),
        Row("records per CPU-second", {n: f["records_per_cpu_s"] for n, f in figures.items()}, "rec", 0),
    ]
    result.figures = {**figures, "fill_seconds": fill_seconds}
    if "siscom" in figures and figures["siscom"]["records_s"] is not None:
        f = figures["siscom"]
        result.verdicts.append(
            Verdict(
                "pipeline without clients >= 100,000 records/s on one core",
                f["records_s"] >= 100_000 and f["cpu_percent"] <= 105.0,
                f"{f['records_s']:,.0f} records/s at {f['cpu_percent']:.0f}% CPU",
            )
        )
    return result


async def _read_through(server: ServerUnderTest, records: int, timeout: float = 120.0) -> dict[str, Any]:
    """Poll the server's record counter from the first record read to the last."""
    deadline = time.monotonic() + timeout
    first: tuple[float, int, float] | None = None
    while True:
        count = (await server.stats()).get("records", 0)
        now, cpu = time.monotonic(), server.cpu_seconds()
        if first is None and count > 0:
            first = (now, count, cpu)
        if count >= records:
            break
        if now > deadline:
            raise RuntimeError(f"{server.target.name} read only {count} of {records} records in {timeout} s")
        await asyncio.sleep(0.05)
    assert first is not None
    elapsed = now - first[0]
    cpu_used = cpu - first[2]
    if count == first[1]:  # all read before the first look: too fast to time (a smoke run)
        return {"records_s": None, "cpu_percent": None, "records_per_cpu_s": None, "measured_records": 0, "seconds": 0.0}
    return {
        "records_s": (count - first[1]) / elapsed,
        "cpu_percent": 100.0 * cpu_used / elapsed,
        "records_per_cpu_s": (count - first[1]) / cpu_used if cpu_used > 0 else None,
        "measured_records": count - first[1],
        "seconds": elapsed,
    }


def _shape_params(shape: Shape) -> dict[str, Any]:
    per_client = "all" if shape.per_client is None else shape.per_client
    return {
        "devices": shape.devices,
        "clients": shape.clients,
        "devices_per_client": per_client,
        "rate": shape.rate,
        "window_s": shape.duration,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


Scenario = Callable[[Bench, Sequence[Target]], Awaitable[Result]]

from bench.flood import run_flood  # noqa: E402  (it uses the pieces above)

SCENARIOS: dict[str, Scenario] = {
    "steady": steady,
    "capacity": capacity,
    "overload": overload,
    "idle": idle,
    "pipeline": pipeline,
    "flood": run_flood,
}

#: The servers each scenario runs by default: the gateway and the baseline, plus two workers
#: for capacity (the issue asks for that figure too).
DEFAULT_TARGETS: dict[str, tuple[Target, ...]] = {
    "steady": (SISCOM, NAIVE),
    "capacity": (SISCOM, NAIVE, SISCOM_2_WORKERS),
    "overload": (SISCOM, NAIVE),
    "idle": (SISCOM, NAIVE),
    "pipeline": (SISCOM, NAIVE),
    "flood": (SISCOM, NAIVE),
}
TARGETS = {target.name: target for target in (SISCOM, NAIVE, SISCOM_2_WORKERS)}

