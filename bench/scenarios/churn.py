"""``churn``: clients connecting and leaving at 50 a second for five minutes, beside a canary.

The mix: WebSocket and Server-Sent Events in turn; half of each with a cursor taken from the
canary's frames a few seconds earlier (a resume: a replay from the recent window), the rest
plain; one in ten of every device (with the snapshot of every device, or a replay of every
record), the others of ten devices. Each stays 0.3 to 3 s, reading, then closes or resets
its connection. One canary client of 100 devices (20 positions a second) stays throughout and
times every position.

Target: the server's RSS ends (10 s after the churn) within 150 MB of where it started, and the
canary's p99 is at most 250 ms. ``--seconds`` sets the churn's length (default 300).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import quote

import psutil

from bench.clients import OPENERS, Recorder
from bench.producer import FixedRateProducer
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import MB, Bench, Scenario
from bench.servers import HOST, SISCOM, Target
from bench.stats import percentile

CONNECTS_PER_SECOND = 50
DEVICES = 1000
RATE = 200.0  # records per second
SETTLE_SECONDS = 10.0
#: How far back a resuming client's cursor is.
CURSOR_AGE_SECONDS = 3.0
WINDOW_SECONDS = 20.0
CANARY_DEVICES = 100
#: The producer's pacing tick: one batch every 50 ms (10 records), not every 5 ms. tansu's memory
#: storage slows down with every batch a topic holds: at 200 batches a second the records stopped
#: flowing about 100 s into the churn (the server read 19,700 and then next to nothing, and the
#: few that came were seconds late), which the canary's p99 then measured.
PRODUCER_TICK = 0.05
_ID = b'"id":"'


class Canary:
    """The long-lived client: its recorder, and the cursors of its frames, newest last."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.cursors: deque[tuple[float, str]] = deque(maxlen=4096)

    def on_text(self, payload: bytes, arrived: float) -> None:
        self.recorder.on_text(payload, arrived)
        start = payload.find(_ID)
        if start >= 0:
            start += len(_ID)
            self.cursors.append((arrived, payload[start : payload.find(b'"', start)].decode()))

    def cursor(self, age: float) -> str | None:
        """A cursor of a frame about ``age`` seconds old (the oldest there is, if younger)."""
        wanted = time.time() - age
        chosen = None
        for arrived, cursor in self.cursors:
            if arrived > wanted:
                break
            chosen = cursor
        return chosen or (self.cursors[0][1] if self.cursors else None)


async def churn_client(
    transport: str, port: int, path: str, lifetime: float, reset: bool, counts: dict[str, int]
) -> None:
    def discard(payload: bytes, arrived: float) -> None:
        counts["frames"] += 1

    try:
        client = await OPENERS[transport](HOST, port, path, discard, timeout=10.0)
    except Exception as error:  # noqa: BLE001 - counted: a refused or failed connect
        counts[f"connect failed: {type(error).__name__}"] += 1
        return
    counts["connected"] += 1
    await asyncio.sleep(lifetime)
    if reset:
        client.abort()
    else:
        client.close()


def _churn_process(conn: Connection, port: int, devices: list[str], seconds: float, rate: float, seed: int) -> None:
    """The churning clients, in a process of their own: ``rate`` connects a second for
    ``seconds``, with the newest cursor the harness sent; then (clients, counts) back."""
    counts = asyncio.run(_churn_clients(conn, port, devices, seconds, rate, seed))
    conn.send(counts)
    conn.close()


async def _churn_clients(
    conn: Connection, port: int, devices: list[str], seconds: float, rate: float, seed: int
) -> tuple[int, dict[str, int]]:
    rng = random.Random(seed)
    counts = _Counts()
    tasks: set[asyncio.Task[None]] = set()
    cursor = None
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < seconds:
        while conn.poll():
            cursor = conn.recv()
        for _ in range(int((now - started) * rate) - n):
            transport = "websocket" if n % 2 == 0 else "sse"
            query = []
            if n % 10 != 9:
                query.append("device_ids=" + quote(",".join(rng.sample(devices, 10))))
            if n % 4 in (1, 2) and cursor is not None:
                query.append("cursor=" + cursor)
            path = "/api/v1/stream" + ("?" + "&".join(query) if query else "")
            task = asyncio.create_task(
                churn_client(transport, port, path, rng.uniform(0.3, 3.0), rng.random() < 0.3, counts)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks, return_exceptions=True)
    return n, dict(counts)


async def churn(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    seconds = bench.options.seconds or (5.0 if smoke else 300.0)
    settle = 2.0 if smoke else SETTLE_SECONDS
    params = {
        "connects_per_s": CONNECTS_PER_SECOND,
        "churn_s": seconds,
        "devices": DEVICES,
        "rate": RATE,
        "settle_s": settle,
    }
    result = Result("churn", params, [target.name for target in targets])
    figures: dict[str, dict[str, Any]] = {}
    for target in targets:
        topic = await bench.topic(f"churn-{target.name}")
        # A window of 20 s of records (resuming clients' cursors are 3 s old): filled before the
        # start is measured, so that its growth, by design, is not taken for the churn's.
        server = bench.server(
            target,
            topic,
            STREAM_MAX_CONNECTIONS="2000",
            STREAM_MAX_CONNECTIONS_PER_IP="2000",
            STREAM_REPLAY_WINDOW_RECORDS=str(int(RATE * WINDOW_SECONDS)),
        )
        producer = FixedRateProducer(
            bench.broker.bootstrap, topic, DEVICES, seed=bench.options.seed, tick=PRODUCER_TICK
        )
        devices = producer.device_ids
        canary = Canary()
        counts = _Counts()
        churner = None
        canary_client = None
        produce = None
        try:
            await producer.start()
            await server.start()
            canary_devices = ",".join(devices[:CANARY_DEVICES])
            canary_client = await OPENERS["websocket"](
                HOST, server.port, f"/api/v1/stream?device_ids={quote(canary_devices)}", canary.on_text
            )
            produce = asyncio.create_task(producer.run(RATE, seconds + settle + 10.0))
            await asyncio.sleep(2.0 if smoke else WINDOW_SECONDS + 5.0)  # the canary has cursors; the window is full
            rss_start = server.rss_bytes()
            records_start = (await server.stats(timeout=30.0)).get("records", 0)
            rss_peak = rss_start
            samples = []
            t0_ms = time.time() * 1000.0
            started = time.monotonic()
            # The churning clients run in a process of their own: in this one they delayed the
            # producer and the canary, whose figures then measured this process, not the server.
            parent, child = multiprocessing.get_context("spawn").Pipe()
            churner = multiprocessing.get_context("spawn").Process(
                target=_churn_process,
                args=(child, server.port, devices, seconds, CONNECTS_PER_SECOND, bench.options.seed),
                name="churn-clients",
            )
            churner.start()
            next_sample = started
            while not parent.poll():
                now = time.monotonic()
                parent.send(canary.cursor(CURSOR_AGE_SECONDS))
                if now >= next_sample:
                    rss = server.rss_bytes()
                    rss_peak = max(rss_peak, rss)
                    samples.append((round(now - started), round(rss / MB, 1)))
                    next_sample += 10.0
                await asyncio.sleep(0.25)
                if now - started > seconds + 60.0:
                    raise RuntimeError("the churning clients did not finish")
            t1_ms = time.time() * 1000.0
            n, churned = parent.recv()
            counts.update(churned)
            churner.join(10.0)
            await asyncio.sleep(settle)
            rss_end = server.rss_bytes()
            rss_peak = max(rss_peak, rss_end)
            sockets_after = _tcp_connections(server.pid, server.port)
            try:
                stats = await server.stats(timeout=30.0)
            except (OSError, RuntimeError):
                stats = {}
        finally:
            if churner is not None and churner.is_alive():
                churner.terminate()
                churner.join(10.0)
            if canary_client is not None:
                canary_client.abort()
            if produce is not None:
                produce.cancel()
                await asyncio.gather(produce, return_exceptions=True)
            await producer.stop()
            await asyncio.to_thread(server.stop)
        recorder = canary.recorder
        # The collector's pauses stop the loop: every frame waiting waits as long (bench/gcprobe).
        pauses = server.gc_pauses(t0_ms / 1000.0, t1_ms / 1000.0 + settle) or []
        ages = sorted(age for stamp, age in zip(recorder.stamps, recorder.ages) if t0_ms <= stamp <= t1_ms)
        figures[target.name] = {
            "clients": n,
            "connected": counts["connected"],
            "failed": {key: value for key, value in counts.items() if key.startswith("connect failed")},
            "rss_start_mb": rss_start / MB,
            "rss_end_mb": rss_end / MB,
            "rss_peak_mb": rss_peak / MB,
            "rss_growth_mb": (rss_end - rss_start) / MB,
            "canary_frames": len(ages),
            "canary_p50_ms": percentile(ages, 50) if ages else None,
            "canary_p99_ms": percentile(ages, 99) if ages else None,
            "canary_max_ms": ages[-1] if ages else None,
            "records_read": stats.get("records", records_start) - records_start,
            "gc_passes": len(pauses),
            "gc_pause_max_ms": 1000.0 * max((seconds for _, seconds in pauses), default=0.0),
            "connections_after": stats.get("connections"),
            "sockets_after": sockets_after,
            "rss_samples": samples,
        }
        print(f"   {target.name}: RSS every 10 s (s, MB): {samples}", flush=True)
        print(f"   {target.name}: failed connects: {figures[target.name]['failed'] or 'none'}", flush=True)

    def row(label: str, unit: str, key: str, digits: int = 1, show_ratio: bool = False) -> Row:
        return Row(label, {name: f[key] for name, f in figures.items()}, unit, digits, show_ratio)

    result.rows += [
        row("clients that came and went", "", "clients", 0),
        row("of them connected", "", "connected", 0),
        row("server RSS at the start", "MB", "rss_start_mb"),
        row("server RSS at the end", "MB", "rss_end_mb"),
        row("server RSS peak", "MB", "rss_peak_mb"),
        row("growth start -> end", "MB", "rss_growth_mb"),
        row("canary positions", "", "canary_frames", 0),
        row("canary p50", "ms", "canary_p50_ms"),
        row("canary p99", "ms", "canary_p99_ms"),
        row("canary worst", "ms", "canary_max_ms"),
        row("records the server read (churn and settle)", "", "records_read", 0),
        row("garbage collections (churn and settle)", "", "gc_passes", 0),
        row("longest garbage-collection pause", "ms", "gc_pause_max_ms"),
        row("streams open after", "", "connections_after", 0),
        row("client sockets still open after", "", "sockets_after", 0),
    ]
    result.figures = figures
    for name, f in figures.items():
        result.verdicts += [
            Verdict(
                f"churn ({name}): RSS ends within 150 MB of its start",
                f["rss_growth_mb"] <= 150.0,
                f"{f['rss_start_mb']:.0f} -> {f['rss_end_mb']:.0f} MB (peak {f['rss_peak_mb']:.0f})",
            ),
            Verdict(
                f"churn ({name}): canary p99 <= 250 ms",
                f["canary_p99_ms"] is not None and f["canary_p99_ms"] <= 250.0,
                f"p99 {f['canary_p99_ms'] or 0:.0f} ms over {f['canary_frames']} positions",
            ),
        ]
    return result


def _tcp_connections(pid: int, port: int) -> int:
    """The server's TCP connections on its port (its clients' sockets it has not closed)."""
    return sum(
        1
        for connection in psutil.Process(pid).net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.raddr
    )


class _Counts(dict):
    """Counts that start at zero."""

    def __missing__(self, key: str) -> int:
        return 0


SCENARIO = Scenario("churn", churn, targets=(SISCOM,), order=95)
