"""``crowd``: 10,000 clients x 5 of 10,000 devices, 1,000 records/s (5,000 deliveries/s), with a
keep-alive every 5 s.

Target: every record delivered, p99 <= 100 ms, every keep-alive on time (no gap over 6 s), and
at most 30 KB of server memory per connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import load_rows, measure_each
from bench.servers import NAIVE, SISCOM, WEBSOCKETS, Target

MAX_P99_MS = 100.0


async def crowd(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    keepalive = 1.0 if smoke else 5.0
    clients = bench.options.clients or (40 if smoke else 10_000)
    shape = Shape(
        devices=100 if smoke else 10_000,
        clients=clients,
        per_client=5,
        rate=bench.options.rate or (100.0 if smoke else 1000.0),
        warmup=keepalive * 1.2,  # every client has had its first keep-alive
        duration=2.2 if smoke else 12.0,
        drain=0.5 if smoke else 3.0,
        client_processes=1 if smoke else 4,
        connect_concurrency=16,
    )
    result = Result("crowd", {**shape.params(), "keepalive_s": keepalive}, [target.name for target in targets])
    figures = await measure_each(
        bench, targets, shape, "crowd", env={"STREAM_KEEPALIVE_SECONDS": str(keepalive)}, keepalive=keepalive
    )
    load_rows(result, figures)
    result.rows += [
        Row("keep-alives on time", {n: f.keepalives_on_time for n, f in figures.items()}, "clients", 0, False),
        Row("memory per connection", {n: f.kb_per_connection for n, f in figures.items()}, "KB"),
    ]
    if "siscom" in figures:
        f = figures["siscom"]
        p99 = f.latency_ms["p99"]
        result.verdicts += [
            Verdict(
                f"crowd: every record delivered, p99 <= {MAX_P99_MS:.0f} ms",
                f.delivered == f.expected and p99 is not None and p99 <= MAX_P99_MS,
                f"{f.delivered:,} of {f.expected:,} ({f.delivery_ratio:.2%}), p99 {ms(p99)}",
            ),
            Verdict(
                "crowd: every keep-alive on time",
                f.keepalives_on_time == f.clients == shape.clients,
                f"{f.keepalives_on_time:,} of {shape.clients:,} clients",
            ),
            Verdict(
                "crowd: <= 30 KB server memory per connection",
                f.kb_per_connection is not None and f.kb_per_connection <= 30.0,
                f"{f.kb_per_connection:.1f} KB",
            ),
        ]
    return result


SCENARIO = Scenario("crowd", crowd, targets=(SISCOM, NAIVE, WEBSOCKETS), order=45)
