"""``siscom serve --workers 2``: two gateways behind one port, each streaming every record."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

from support.kafka import produce
from support.workers import clients_on_both, start_two_workers


def record(device_id: str, n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n}}).encode()


async def test_two_workers_each_deliver_every_record_and_close_with_1001_on_sigterm(server_factory, broker, topic):
    server = start_two_workers(server_factory, broker.bootstrap, topic)
    async with AsyncExitStack() as stack:
        clients = await clients_on_both(stack, server)

        values = [record(f"dev-{n % 4}", n) for n in range(25)]
        await produce(broker.bootstrap, topic, values)
        for client in clients:
            frames = [await client.next_frame(10.0) for _ in values]
            assert [frame["data"]["data"]["SEQ"] for frame in frames] == list(range(25))

        status = await asyncio.to_thread(server.stop)
        codes = [await client.wait_closed() for client in clients]

    assert status == 0, server.log_tail()
    assert codes == [1001] * len(clients)
