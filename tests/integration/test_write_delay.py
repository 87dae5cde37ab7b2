"""A write delay (STREAM_WRITE_DELAY_MILLISECONDS): frames routed within the delay of each other
reach their client together, in one write, and none is lost or reordered on the way."""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaProducer
from support import ws_client
from support.status import wait_ready, wait_stats

DELAY_MS = 600


def record(n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": "delayed", "SEQ": n}}).encode()


async def test_frames_produced_within_the_delay_arrive_together_in_order(make_server, broker, topic):
    server = make_server(STREAM_WRITE_DELAY_MILLISECONDS=DELAY_MS)
    await wait_ready(server)
    loop = asyncio.get_running_loop()
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=delayed")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
        await producer.start()
        try:
            produced = []
            for n in range(3):  # 100 ms apart, all within the delay of the first
                await producer.send_and_wait(topic, record(n))
                produced.append(loop.time())
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()
        arrivals, seqs = [], []
        for _ in range(3):
            frame = json.loads(await asyncio.wait_for(client.connection.recv(), 10))
            arrivals.append(loop.time())
            seqs.append(frame["data"]["data"]["SEQ"])
    assert seqs == [0, 1, 2]
    assert produced[2] - produced[0] >= 0.2
    # Held until the delay counted from the first frame's routing was over, then written at once.
    assert arrivals[0] - produced[0] >= 0.5 * DELAY_MS / 1000, arrivals[0] - produced[0]
    assert arrivals[2] - arrivals[0] < 0.05, arrivals
