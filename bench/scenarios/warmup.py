"""``warmup``: a process starts over a log with an hour of records behind it.

A topic is filled with 1,000,000 records beforehand. The gateway starts with the default lookback
and reads them all back before ``/ready`` says 200 (``warm``): the figures are the time from the
process's start to ready, the warm-up's own records/s (from its stats) and the process's RSS once
ready. Beside it, in the same run, the same records read through the live pipeline by a process
without warm-up, from the log's start (``live``: what the pipeline scenario measures): the cost
of a record read back against one read live.

Target: at least 200,000 records/s of warm-up per process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.producer import fill
from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario
from bench.scenarios.pipeline import _read_through
from bench.servers import SISCOM, Target

PARTITIONS = 4


async def warmup(bench: Bench, targets: Sequence[Target]) -> Result:
    records = 5_000 if bench.options.smoke else 1_000_000
    topic = await bench.topic("warmup", partitions=PARTITIONS)
    filled = time.monotonic()
    await fill(bench.broker.bootstrap, topic, records)
    # One more record on every partition: after a burst, the test broker's ListOffsets can report
    # a log end short of the true one until the next write (the rest would be read live).
    producer = AIOKafkaProducer(bootstrap_servers=bench.broker.bootstrap)
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            await producer.send_and_wait(topic, b'{"data":{"DEVICE_ID":"top-up"}}', partition=partition)
    finally:
        await producer.stop()
    total = records + PARTITIONS
    fill_seconds = time.monotonic() - filled
    result = Result("warmup", {"records": total, "partitions": PARTITIONS}, ["warm", "live"])

    warm = bench.server(SISCOM, topic)
    started = time.monotonic()
    try:
        await warm.start(timeout=900)
        to_ready = time.monotonic() - started
        # All the CPU the process used, from its start (imports included) to ready.
        cpu = warm.cpu_seconds()
        stats = await warm.stats()
        rss = warm.rss_bytes()
    finally:
        await asyncio.to_thread(warm.stop)
    progress = stats["warmup"]
    seconds = progress["seconds"] or None
    warm_figures: dict[str, Any] = {
        "start_to_ready_s": to_ready,
        "warmup_s": seconds,
        "records_read": progress["records_read"],
        "records_s": progress["records_read"] / seconds if seconds else None,
        "rss_mb": rss / 2**20,
        "cpu_seconds": cpu,
        "records_per_cpu_s": progress["records_read"] / cpu if cpu > 0 else None,
        "devices_known": stats["devices_known"],
        "window_records": stats["window"]["records"],
    }

    live = bench.server(SISCOM, topic, STREAM_SNAPSHOT_LOOKBACK_SECONDS="0", KAFKA_AUTO_OFFSET_RESET="earliest")
    try:
        started = time.monotonic()
        await live.start()
        live_figures: dict[str, Any] = {"start_to_ready_s": time.monotonic() - started}
        live_figures.update(await _read_through(live, total, timeout=900))
        live_figures["rss_mb"] = live.rss_bytes() / 2**20
    finally:
        await asyncio.to_thread(live.stop)

    figures = {"warm": warm_figures, "live": live_figures}
    result.rows += [
        Row("records/s", {n: f["records_s"] for n, f in figures.items()}, "rec/s", 0),
        # On a shared machine the process gets what CPU it can: per CPU-second is the fairer figure.
        Row("records per CPU-second", {n: f["records_per_cpu_s"] for n, f in figures.items()}, "rec", 0),
        Row("start to ready", {n: f["start_to_ready_s"] for n, f in figures.items()}, "s", 2),
        Row("RSS after", {n: f["rss_mb"] for n, f in figures.items()}, "MB", 1),
        Row("devices known", {"warm": warm_figures["devices_known"]}, "", 0, show_ratio=False),
        Row("window records", {"warm": warm_figures["window_records"]}, "", 0, show_ratio=False),
    ]
    result.figures = {**figures, "fill_seconds": fill_seconds}
    rate = warm_figures["records_s"]
    if rate is not None and not bench.options.smoke:
        result.verdicts.append(
            Verdict(
                "warm-up >= 200,000 records/s per process",
                rate >= 200_000,
                f"{rate:,.0f} records/s; {warm_figures['records_read']:,} records in {seconds:.2f} s",
            )
        )
    return result


SCENARIO = Scenario("warmup", warmup, targets=(SISCOM,), order=55)
