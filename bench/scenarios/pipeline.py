"""``pipeline``: no clients; a topic filled beforehand is read from the start.

Target: at least 100,000 records/s through consumer, decoder and router.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench.producer import fill
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario
from bench.servers import NAIVE, SISCOM, ServerUnderTest, Target


async def pipeline(bench: Bench, targets: Sequence[Target]) -> Result:
    records = 5_000 if bench.options.smoke else 1_000_000
    topic = await bench.topic("pipeline")
    filled = time.monotonic()
    await fill(bench.broker.bootstrap, topic, records)
    fill_seconds = time.monotonic() - filled
    result = Result("pipeline", {"records": records, "clients": 0}, [target.name for target in targets])
    figures: dict[str, dict[str, Any]] = {}
    for target in targets:
        # Read live from the log's start: no warm-up (it would read them all back before ready).
        server = bench.server(target, topic, KAFKA_AUTO_OFFSET_RESET="earliest", STREAM_SNAPSHOT_LOOKBACK_SECONDS="0")
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
        return {
            "records_s": None,
            "cpu_percent": None,
            "records_per_cpu_s": None,
            "measured_records": 0,
            "seconds": 0.0,
        }
    return {
        "records_s": (count - first[1]) / elapsed,
        "cpu_percent": 100.0 * cpu_used / elapsed,
        "records_per_cpu_s": (count - first[1]) / cpu_used if cpu_used > 0 else None,
        "measured_records": count - first[1],
        "seconds": elapsed,
    }


SCENARIO = Scenario("pipeline", pipeline, targets=(SISCOM, NAIVE), order=50)
