"""Scenario 7: thousands of clients that vanish abruptly, with a TCP reset, often mid-frame.

Mobile browsers drop off networks without a goodbye. Every such client must leave nothing
behind: no session, no task, no entry in the device index; and the log must not fill with
errors about it. The gateway runs in this test's event loop so that its tasks can be counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from chaos.inprocess import InProcessServer
from chaos.rawws import RawWebSocket, masked_frame
from chaos.traffic import Producer, position
from support.status import wait_stats

from siscom.config import Settings

pytestmark = pytest.mark.chaos

CYCLES = 4000
CONCURRENT = 25
DEVICES = [f"churn-{n}" for n in range(10)]


async def vanish(server: InProcessServer, index: int) -> None:
    """Connect, do one of four things, then reset the connection."""
    devices = ",".join(DEVICES[index % 10 : index % 10 + 3])
    client = await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?device_ids={devices}"))
    try:
        mode = index % 4
        if mode == 1:  # half a frame of a subscribe command
            frame = masked_frame(json.dumps({"action": "subscribe", "device_ids": ["churn-9"]}).encode())
            await client.send(frame[: len(frame) // 2])
        elif mode == 2:  # a whole command, then gone before the answer
            await client.send(masked_frame(json.dumps({"action": "subscribe", "device_ids": ["churn-8"]}).encode()))
        elif mode == 3:  # in the middle of reading a frame (the snapshot is on its way)
            await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client.sock, 3), 2)
    finally:
        client.reset()


async def produce_until(bootstrap: str, topic: str, stop: asyncio.Event) -> int:
    sent = 0
    async with Producer(bootstrap) as producer:
        while not stop.is_set():
            await producer.send_many(topic, [(d, position(d, sent + n)) for n, d in enumerate(DEVICES)])
            sent += len(DEVICES)
            await asyncio.sleep(0.05)
    return sent


async def test_thousands_of_abrupt_disconnects_leave_nothing_behind_and_log_no_errors(broker, topic, scenario):
    scenario.title = "7. abrupt disconnects (TCP RST)"
    scenario.target = "stats back to 0; no leaked tasks; 0 errors logged"
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )
    async with InProcessServer(settings) as server:
        gateway = server.gateway
        stop = asyncio.Event()
        producing = asyncio.create_task(produce_until(broker.bootstrap, topic, stop))
        await wait_stats(server, lambda s: s["records"] > 0)
        await asyncio.sleep(0.5)
        tasks_before = len(asyncio.all_tasks())
        started = time.monotonic()
        for first in range(0, CYCLES, CONCURRENT):
            await asyncio.gather(*(vanish(server, index) for index in range(first, first + CONCURRENT)))
        churn_seconds = time.monotonic() - started
        body = await wait_stats(
            server,
            lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0 and s["connections_closed"] >= CYCLES,
            timeout=30,
        )
        # Hypercorn finishes its side of each connection shortly after the session ended.
        deadline = time.monotonic() + 10
        while len(asyncio.all_tasks()) > tasks_before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        tasks_after = len(asyncio.all_tasks())
        stop.set()
        records = await producing
        sessions_left = gateway.connections
        indexed = len(gateway.subscriptions)

    errors = server.log.at_least(logging.ERROR)
    tracebacks = server.log.with_traceback()
    warnings = [r for r in server.log.at_least(logging.WARNING) if r.levelno == logging.WARNING]
    assert body["connections_opened"] == body["connections_closed"] == CYCLES
    assert sessions_left == 0 and indexed == 0
    assert tasks_after <= tasks_before, f"{tasks_after - tasks_before} tasks more than before"
    assert not errors, errors[:5]
    assert not tracebacks, tracebacks[:5]
    scenario.figure(
        "connections reset", f"{CYCLES} ({CONCURRENT} at a time, {churn_seconds:.1f} s), records flowing: {records}"
    )
    scenario.figure("connections / devices_subscribed after", f"{body['connections']} / {body['devices_subscribed']}")
    scenario.figure("opened / closed", f"{body['connections_opened']} / {body['connections_closed']}")
    scenario.figure("asyncio tasks before / after", f"{tasks_before} / {tasks_after}")
    scenario.figure("ERROR lines / tracebacks / WARNING lines", f"{len(errors)} / {len(tracebacks)} / {len(warnings)}")
