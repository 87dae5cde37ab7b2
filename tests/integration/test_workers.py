"""``siscom serve --workers 2``: two gateways behind one port, each streaming every record."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import psutil
from support import ServerProcess, ws_client
from support.kafka import produce


def record(device_id: str, n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n}}).encode()


def workers_by_client_count(server: ServerProcess) -> dict[int, int]:
    """Worker pid -> established connections it holds on the server's port."""
    counts = {}
    for worker in psutil.Process(server.pid).children():
        connections = worker.net_connections(kind="tcp")
        counts[worker.pid] = sum(
            c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port for c in connections
        )
    return counts


async def test_two_workers_each_deliver_every_record_and_close_with_1001_on_sigterm(server_factory, broker, topic):
    # "earliest" without warm-up: a worker whose consumer starts after the records were written
    # still reads them, live.
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_AUTO_OFFSET_RESET": "earliest",
        "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "0",
    }
    server = server_factory(env, args=["--workers", "2"])
    assert len(psutil.Process(server.pid).children()) == 2

    async with AsyncExitStack() as stack:
        clients = []
        # The kernel hands each connection to whichever worker accepts first, and a worker
        # accepts once its gateway runs: open clients until both hold some (bounded).
        for _ in range(100):
            clients.append(await stack.enter_async_context(ws_client(server.ws_url())))
            if len(clients) >= 4 and all(workers_by_client_count(server).values()):
                break
            await asyncio.sleep(0.1)
        assert all(workers_by_client_count(server).values()), workers_by_client_count(server)

        values = [record(f"dev-{n % 4}", n) for n in range(25)]
        await produce(broker.bootstrap, topic, values)
        for client in clients:
            frames = [await client.next_frame(10.0) for _ in values]
            assert [frame["data"]["data"]["SEQ"] for frame in frames] == list(range(25))

        status = await asyncio.to_thread(server.stop)
        codes = [await client.wait_closed() for client in clients]

    assert status == 0, server.log_tail()
    assert codes == [1001] * len(clients)
