"""Scenario 8: SIGTERM while clients are connected and records flow.

Every client must get close 1001 (going away), so browsers know to reconnect elsewhere, and the
process must exit 0 within 10 s. The gateway joins no consumer group (it reads every partition
itself, see ``siscom.pipeline.consumer``), so "leaving the group" means leaving nothing behind on
the broker: no group while it runs, none after it is gone.
"""

from __future__ import annotations

import asyncio
import collections
import time
from contextlib import AsyncExitStack

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from chaos.traffic import FrameLog, Producer, position
from support import ws_client
from support.status import wait_stats

pytestmark = pytest.mark.chaos

TOPIC = "positions"
CLIENTS = 50
DEVICES = [f"bus-{n}" for n in range(20)]


async def consumer_groups(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return [group for group, _ in await admin.list_consumer_groups()]
    finally:
        await admin.close()


async def produce_until(bootstrap: str, stop: asyncio.Event) -> int:
    sent = 0
    async with Producer(bootstrap) as producer:
        while not stop.is_set():
            await producer.send_many(TOPIC, [(d, position(d, sent + n)) for n, d in enumerate(DEVICES)])
            sent += len(DEVICES)
            await asyncio.sleep(0.04)  # about 500 records/s
    return sent


async def test_sigterm_under_load_closes_every_client_with_1001_and_exits_0_within_10_s(broker_and_server, scenario):
    scenario.title = "8. SIGTERM under load"
    scenario.target = "every client 1001; exit 0 < 10 s; nothing left on broker"
    broker, server = await broker_and_server(TOPIC, 3, KAFKA_GROUP_ID="siscom-stream", LOG_LEVEL="INFO")
    stop = asyncio.Event()
    producing = asyncio.create_task(produce_until(broker.bootstrap, stop))
    try:
        async with AsyncExitStack() as stack:
            logs = []
            for n in range(CLIENTS):
                query = "" if n % 2 else f"?device_ids={DEVICES[n % len(DEVICES)]}"
                client = await stack.enter_async_context(ws_client(server.ws_url(f"/api/v1/stream{query}")))
                logs.append(await stack.enter_async_context(FrameLog(client)))
            await wait_stats(server, lambda s: s["connections"] == CLIENTS)
            for log in logs:
                await log.wait_until(lambda seen: len(seen.data_frames()) >= 5, 10, "records flowing")
            groups_while_running = await consumer_groups(broker.bootstrap)
            await asyncio.sleep(1.0)  # under load for a while

            started = time.monotonic()
            exit_code = await asyncio.to_thread(server.stop)
            elapsed = time.monotonic() - started
            for log in logs:
                await asyncio.wait_for(log.closed.wait(), 5)
            codes = collections.Counter(log.close_code for log in logs)
    finally:
        stop.set()
        records = await producing
    groups_after = await consumer_groups(broker.bootstrap)

    assert exit_code == 0, server.log_tail()
    assert elapsed < 10
    assert codes == {1001: CLIENTS}, codes
    assert groups_while_running == [] and groups_after == []
    log_text = server.log_text()
    assert "Traceback" not in log_text
    scenario.figure("clients / records flowing", f"{CLIENTS} / ~500 per s ({records} sent)")
    scenario.figure("SIGTERM -> exit", f"{elapsed:.2f} s, exit code {exit_code}")
    scenario.figure("close codes seen by clients", ", ".join(f"{code}: {count}" for code, count in codes.items()))
    scenario.figure("consumer groups on the broker (running / after)", f"{groups_while_running} / {groups_after}")
