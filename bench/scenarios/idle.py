"""``idle``: 10,000 connections and no data.

Target: every keep-alive on time and at most 30 KB of server memory per connection.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from bench.clients import ClientPool
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import MB, Bench, Scenario
from bench.servers import HOST, NAIVE, SISCOM, Target


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
                HOST,
                server.port,
                subscriptions,
                processes=1 if smoke else 4,
                concurrency=16,
                deflate=target.deflate,
                transport=target.transport,
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


SCENARIO = Scenario("idle", idle, targets=(SISCOM, NAIVE), order=40)
