"""Scenario 3: no broker at start, then one; then none again, and again one, several times.

While the broker is away the gateway serves: ``/health`` answers, ``/ready`` says why it is not
ready, clients connect and wait. It tries to reach the broker with exponential backoff, capped and
jittered, each attempt in the log; once the broker is there, records flow to the waiting clients.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from chaos.readiness import ReadyWatch
from chaos.traffic import FrameLog, Producer, position, sequences
from support import ws_client
from support.http import http_get_json

from siscom.dev.broker import create_topics, free_port

pytestmark = pytest.mark.chaos

TOPIC = "late"
BACKOFF_CAP = 1.0
#: Long enough for the delays to double from about 0.2 s up to the cap (0.2 + 0.4 + 0.8 + 1.0 s
#: plus jitter), and to be held there.
ABSENCE_SECONDS = 3.0
CYCLES = 3
RECORDS_PER_CYCLE = 10
RETRY_LINE = re.compile(r"Cannot connect to Kafka at \S+ \(attempt (\d+)\): .*; retrying in ([0-9.]+) s")


def backoff_runs(log: str) -> list[list[float]]:
    """The delays the log announced, one list per run of failed attempts."""
    runs: list[list[float]] = []
    for attempt, delay in RETRY_LINE.findall(log):
        if attempt == "1":
            runs.append([])
        runs[-1].append(float(delay))
    return runs


async def test_an_absent_broker_is_retried_with_capped_backoff_and_streaming_starts_when_it_comes(
    broker_factory, server_factory, scenario
):
    scenario.title = "3. broker absent, repeatedly"
    scenario.target = f"backoff grows, capped at {BACKOFF_CAP:g} s; data once present"
    port = free_port()
    server = server_factory(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "KAFKA_TOPIC": TOPIC,
            "KAFKA_AUTO_OFFSET_RESET": "earliest",
            # Every record live, in order: no warm-up (it would turn those read at the first
            # connection into a snapshot: docs/warm-start.md).
            "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "0",
            "KAFKA_RECONNECT_BACKOFF_MAX_SECONDS": str(BACKOFF_CAP),
        }
    )
    broker = None
    first_records = []
    reasons = set()
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=van-1")) as client, FrameLog(client) as log:
        async with ReadyWatch(server.url) as ready:
            for cycle in range(CYCLES):
                gone = time.monotonic()
                if broker is not None:
                    broker.kill()
                    _, body = await ready.wait_for(503, gone, timeout=10)
                    reasons.add(body["reason"].split(":")[0])
                await asyncio.sleep(ABSENCE_SECONDS)
                status, body = await asyncio.to_thread(http_get_json, f"{server.url}/ready")
                assert status == 503 and body["reason"].startswith("broker unreachable"), body
                reasons.add(body["reason"].split(":")[0])
                health, _ = await asyncio.to_thread(http_get_json, f"{server.url}/health")
                assert health == 200
                if broker is None:
                    broker = broker_factory(port=port)
                else:
                    await asyncio.to_thread(broker.start)
                present = time.monotonic()
                await create_topics(broker.bootstrap, {TOPIC: 1})
                async with Producer(broker.bootstrap) as producer:
                    for n in range(RECORDS_PER_CYCLE):
                        await producer.send(TOPIC, "van-1", position("van-1", n, CYCLE=cycle))
                await log.wait_until(
                    lambda seen: len(sequences(seen.data_frames(), "van-1", CYCLE=cycle)) >= RECORDS_PER_CYCLE,
                    20,
                    f"records of cycle {cycle}",
                )
                arrivals = [at for at, f in log.data_frames() if f["data"]["data"].get("CYCLE") == cycle]
                first_records.append(min(arrivals) - present)
                await ready.wait_for(200, present, timeout=10)
        assert log.close_code is None

    for cycle in range(CYCLES):
        assert sequences(log.data_frames(), "van-1", CYCLE=cycle) == list(range(RECORDS_PER_CYCLE))
    runs = backoff_runs(server.log_text())
    assert len(runs) >= CYCLES, runs
    for delays in runs:
        assert max(delays) <= BACKOFF_CAP, delays
        if sum(delays) >= ABSENCE_SECONDS - 1:  # a run as long as an absence
            assert delays[-1] > delays[0] and max(delays) >= 0.75 * BACKOFF_CAP, delays
    scenario.figure("absences", f"{CYCLES} x {ABSENCE_SECONDS:g} s (first one at start)")
    for index, delays in enumerate(runs):
        scenario.figure(f"absence {index + 1}: retry delays logged (s)", ", ".join(f"{d:.2f}" for d in delays))
    scenario.figure("/ready while absent", " / ".join(sorted(reasons)))
    scenario.figure("broker present -> first record, per absence", ", ".join(f"{s:.2f} s" for s in first_records))
    scenario.figure("records delivered, in order", f"{CYCLES * RECORDS_PER_CYCLE}/{CYCLES * RECORDS_PER_CYCLE}")
