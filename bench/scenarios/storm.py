"""storm: a reconnect storm. Many clients resume at once from cursors spread over a long log,
beside a live canary.

The log is filled first (``--records``, default 300,000; one partition, 1,000 devices, record
``i`` of device ``i % 1000``), then the gateway starts at its end, and a canary client follows one
device of its own at 50 records/s. Then ``--clients`` clients (default 1,000), half WebSocket with
``?cursor=``, half SSE with ``Last-Event-ID``, each on one device, resume at once from cursors
spread uniformly over the log. Every resuming client checks what it gets: recovered, the exact
records of its device after its cursor, in order, none twice; or ``recovered: false`` and the
reason (a budget refused it; the gateway, started at the log's end, has no snapshot of these
devices to send). Printed: the canary's latency during
the storm (p50, p99, worst, and the longest gap between its frames), clients recovered exactly,
refused (with the budget's counters), failed, RSS peak above idle, and the time until the last
client was live (its last replayed record received, or its `resumed: false`).

``--server-root DIR`` runs the same storm a second time against the gateway's code in ``DIR``
(another tree of this project, e.g. an export of an older commit), in a column of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import sseclient, wsclient
from bench.eventstream import request
from bench.report import Result, Row
from bench.scenarios.harness import MB, Bench, Scenario
from bench.servers import GC_PROBE, HOST, SISCOM, ResourceSampler, ServerUnderTest, Target
from bench.stats import percentile
from siscom.core import cursors

DEVICES = 1000
CANARY = "canary"
CANARY_RATE = 50.0
#: Longest the storm may take before the clients still waiting count as failed.
STORM_SECONDS = 240.0


@dataclass
class Resumer:
    """One resuming client: its device, its cursor's offset, and what it got."""

    number: int
    transport: str
    device: str
    offset: int
    expected: list[int]
    opened_at: float = 0.0
    resumed: dict[str, Any] | None = None
    seqs: list[int] = field(default_factory=list)
    live_at: float | None = None
    outcome: str = "waiting"  # exact, inexact, refused, failed
    events: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_text(self, payload: bytes, arrived: float) -> None:
        if self.done.is_set():
            return
        frame = json.loads(payload)
        event = frame.get("event")
        self.events[event] += 1
        if event == "resumed":
            self.resumed = frame["data"]
            if not self.resumed["recovered"]:
                # Refused (a budget, or a cursor it cannot honour): live from here, after the
                # snapshot of what this process knows (it started at the log's end: little).
                self._finish("refused", arrived)
            elif not self.expected:  # nothing of its device since its cursor
                self._finish("exact", arrived)
            return
        if event != "message":
            return
        if self.resumed is None:
            self._finish("failed", arrived)  # a stream that did not start with `resumed`
            return
        self.seqs.append(frame["data"]["data"]["SEQ"])
        if len(self.seqs) >= len(self.expected):
            self._finish("exact" if self.seqs == self.expected else "inexact", arrived)

    def closed(self, closed: asyncio.Future[int]) -> None:
        """The stream ended before this client had what it expected (e.g. shed as overloaded)."""
        if not self.done.is_set():
            code = None if closed.cancelled() or closed.exception() else closed.result()
            self._finish(f"closed ({code})", time.time())

    def _finish(self, outcome: str, arrived: float) -> None:
        self.outcome = outcome
        self.live_at = arrived
        self.done.set()


async def fill_log(bootstrap: str, topic: str, records: int) -> None:
    """Record ``i``: device ``r{i % DEVICES}`` with ``SEQ`` ``i``, at offset ``i``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for first in range(0, records, 5000):
            futures = [
                await producer.send(
                    topic, json.dumps({"data": {"DEVICE_ID": f"r{i % DEVICES:04d}", "SEQ": i}}).encode(), partition=0
                )
                for i in range(first, min(first + 5000, records))
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Canary:
    """The live client and its producer: for every record sent, how long until the client saw it
    or a newer one (positions are conflated for a client that falls behind: a record it never
    got was shown when a newer one came), by the kernel's arrival stamp."""

    def __init__(self) -> None:
        self.sent: list[float] = []  # POSIX time each SEQ was handed to the producer
        self.arrivals: list[tuple[int, float]] = []  # (SEQ, arrived), in order

    async def produce(self, bootstrap: str, topic: str, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await producer.start()
        try:
            start = time.monotonic()
            while not stop.is_set():
                due = int((time.monotonic() - start) * CANARY_RATE) - len(self.sent)
                for _ in range(due):
                    self.sent.append(time.time())
                    value = {"data": {"DEVICE_ID": CANARY, "SEQ": len(self.sent) - 1}}
                    await producer.send(topic, json.dumps(value).encode(), partition=0)
                await asyncio.sleep(0.005)
        finally:
            await producer.stop()

    def on_text(self, payload: bytes, arrived: float) -> None:
        frame = json.loads(payload)
        if frame.get("event") == "message":
            self.arrivals.append((frame["data"]["data"]["SEQ"], arrived))

    def between(self, t0: float, t1: float, end: float) -> tuple[list[float], float]:
        """Latencies (ms) of the records sent in ``[t0, t1]`` (one not seen by ``end`` counts
        until then), and the longest time without a frame arriving in that span."""
        seqs = [seq for seq, _ in self.arrivals]
        latencies = []
        for seq, sent in enumerate(self.sent):
            if t0 <= sent <= t1:
                found = bisect.bisect_left(seqs, seq)
                seen = self.arrivals[found][1] if found < len(seqs) else end
                latencies.append((seen - sent) * 1000)
        times = [t0] + [arrived for _, arrived in self.arrivals if t0 <= arrived <= t1] + [t1]
        return sorted(latencies), max(b - a for a, b in zip(times, times[1:]))


def resumers(records: int, clients: int, seed: int) -> list[Resumer]:
    rng = random.Random(seed)
    made = []
    for number in range(clients):
        device_index = number % DEVICES
        offset = rng.randrange(records)
        first = offset + (device_index - offset) % DEVICES
        expected = list(range(first, records, DEVICES))
        made.append(
            Resumer(number, "websocket" if number % 2 == 0 else "sse", f"r{device_index:04d}", offset, expected)
        )
    return made


async def open_resumer(server: ServerUnderTest, topic: str, resumer: Resumer) -> Any:
    cursor = cursors.encode(cursors.topics_crc([topic]), ((resumer.offset,),))
    path = f"/api/v1/stream?device_ids={resumer.device}"
    resumer.opened_at = time.time()
    if resumer.transport == "websocket":
        return await wsclient.open_stream(HOST, server.port, f"{path}&cursor={cursor}", resumer.on_text, timeout=60)

    def make() -> sseclient.SseStreamClient:
        client = sseclient.SseStreamClient(HOST, server.port, path, resumer.on_text)
        client._request = request(path, f"{HOST}:{server.port}", {"Cache-Control": "no-cache", "Last-Event-ID": cursor})
        return client

    return await wsclient.connect_opened(make, HOST, server.port, 60)


async def storm_once(bench: Bench, target: Target, records: int, clients: int, root: str | None) -> dict[str, Any]:
    topic = await bench.topic("storm")
    print(f"   filling the log: {records} records", flush=True)
    await fill_log(bench.broker.bootstrap, topic, records)
    server = bench.server(target, topic, STREAM_KEEPALIVE_SECONDS="5", **bench.options.server_env)
    if root is not None:
        server._env["PYTHONPATH"] = f"{root}:{GC_PROBE}"  # the other tree's code, same harness
    await server.start(timeout=60)
    stop = asyncio.Event()
    canary = Canary()
    producer = asyncio.create_task(canary.produce(bench.broker.bootstrap, topic, stop))
    opened: list[Any] = []
    try:
        opened.append(
            await wsclient.open_stream(HOST, server.port, f"/api/v1/stream?device_ids={CANARY}", canary.on_text)
        )
        await asyncio.sleep(3.0)
        idle = server.rss_bytes()
        clients_list = resumers(records, clients, bench.options.seed)
        gate = asyncio.Semaphore(64)

        async def start(resumer: Resumer) -> None:
            async with gate:
                try:
                    client = await open_resumer(server, topic, resumer)
                    client.closed.add_done_callback(resumer.closed)
                    opened.append(client)
                except Exception as error:  # refused at the door, or timed out: a failure
                    resumer.outcome = f"failed ({type(error).__name__})"
                    resumer.done.set()

        async with ResourceSampler(server, interval=0.25) as sampler:
            t0 = time.time()
            await asyncio.gather(*(start(resumer) for resumer in clients_list))
            try:
                async with asyncio.timeout(30.0 if bench.options.smoke else STORM_SECONDS):
                    await asyncio.gather(*(resumer.done.wait() for resumer in clients_list))
            except TimeoutError:
                pass
            t1 = max(
                [r.live_at for r in clients_list if r.live_at is not None and r.outcome in ("exact", "refused")]
                or [time.time()]
            )
            await asyncio.sleep(3.0)  # the canary's frames sent until then arrive
        latencies, gap = canary.between(t0, max(t1, t0 + 1.0), time.time())
        try:
            counters = await server.stats(timeout=10)
        except Exception:  # the figure is what it is
            counters = {}
    finally:
        stop.set()
        for client in opened:
            client.abort()
        await producer
        server.stop()
    outcomes = Counter(r.outcome if r.done.is_set() else "failed (timeout)" for r in clients_list)
    reasons = Counter(
        re.sub(r"\d+", "N", (r.resumed or {}).get("reason", "")) for r in clients_list if r.outcome == "refused"
    )
    return {
        "canary_p50_ms": percentile(latencies, 50) if latencies else None,
        "canary_p99_ms": percentile(latencies, 99) if latencies else None,
        "canary_max_ms": latencies[-1] if latencies else None,
        "canary_records": len(latencies),
        "canary_gap_s": gap,
        "exact": outcomes.get("exact", 0),
        "refused": outcomes.get("refused", 0),
        "failed": sum(n for outcome, n in outcomes.items() if outcome not in ("exact", "refused")),
        "shed": counters.get("overload_closes"),
        "slow": counters.get("slow_client_closes"),
        "outcomes": dict(outcomes),
        "refusal_reasons": dict(reasons),
        "failures": [
            {
                "transport": r.transport,
                "offset": r.offset,
                "resumed": r.resumed,
                "got": len(r.seqs),
                "expected": len(r.expected),
                "outcome": r.outcome,
                "events": dict(r.events),
                "seqs": r.seqs[:20],
                "want": r.expected[:20],
            }
            for r in clients_list
            if r.outcome not in ("exact", "refused")
        ][:5],
        "replay_cost_refusals": counters.get("replay_cost_refusals"),
        "replay_wait_refusals": counters.get("replay_wait_refusals"),
        "rss_idle_mb": idle / MB,
        "rss_peak_above_idle_mb": (max(rss for _, rss in sampler.samples) - idle) / MB if sampler.samples else None,
        "last_live_s": t1 - t0,
        "recovered_live_s_p50": _median(
            [r.live_at - r.opened_at for r in clients_list if r.outcome == "exact" and r.live_at]
        ),
    }


def _median(values: list[float]) -> float | None:
    return percentile(sorted(values), 50) if values else None


async def run(bench: Bench, targets: Sequence[Target]) -> Result:
    options = bench.options
    records = options.records or (5_000 if options.smoke else 300_000)
    clients = options.clients or (10 if options.smoke else 1000)
    # Only the gateway resumes: the baselines have no cursors.
    targets = [target for target in targets if target.module == "siscom"] or [SISCOM]
    runs: list[tuple[str, Target, str | None]] = [(target.name, target, None) for target in targets]
    if options.server_root is not None:
        runs.append(("main", targets[0], str(options.server_root)))
    figures = {}
    for name, target, root in runs:
        print(f"-- storm on {name}", flush=True)
        figures[name] = await storm_once(bench, target, records, clients, root)
        print(f"   {name}: {json.dumps(figures[name])}", flush=True)
    names = list(figures)

    def row(label: str, key: str, unit: str = "", digits: int = 1) -> Row:
        return Row(label, {name: figures[name][key] for name in names}, unit, digits, show_ratio=False)

    result = Result(
        "storm",
        {"records": records, "clients": clients, "devices": DEVICES, "canary_rate": CANARY_RATE, **options.server_env},
        names,
        rows=[
            row("canary p50 during the storm", "canary_p50_ms", "ms"),
            row("canary p99 during the storm", "canary_p99_ms", "ms"),
            row("canary worst", "canary_max_ms", "ms"),
            row("canary longest gap", "canary_gap_s", "s", 2),
            row("clients recovered exactly", "exact", "", 0),
            row("clients not recovered (resumed: false)", "refused", "", 0),
            row("  of which: too far behind", "replay_cost_refusals", "", 0),
            row("  of which: no turn in time", "replay_wait_refusals", "", 0),
            row("clients failed (closed, timed out, wrong records)", "failed", "", 0),
            row("  closed by overload shedding (all clients)", "shed", "", 0),
            row("  closed as slow (all clients)", "slow", "", 0),
            row("RSS idle", "rss_idle_mb", "MB"),
            row("RSS peak above idle", "rss_peak_above_idle_mb", "MB"),
            row("time until the last client is live", "last_live_s", "s"),
            row("a recovered client's time to live, median", "recovered_live_s_p50", "s"),
        ],
        figures=figures,
    )
    return result


SCENARIO = Scenario("storm", run, (SISCOM,), order=90)
