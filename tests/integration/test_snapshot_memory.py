"""What clients that never read their snapshot cost: a real broker, the app under Hypercorn, real
sockets that stop reading.

200 streams of every device, with 20,000 devices known, used to copy the 20,000 snapshot frames
each (about 1.2 GB); the snapshot is now the table's frames, taken a chunk at a time, so a client
that does not read holds a chunk and its socket's buffers until it is closed as slow. (Records
are padded so that a snapshot, about 7 MB, exceeds what the kernel buffers on loopback: 4 MB.) The issue's
target is 100 MB above idle; the bound here is generous (150 MB) for a shared machine.
"""

from __future__ import annotations

import asyncio
import json

import psutil
from support.kafka import produce
from support.sse import open_sse
from support.status import stats, wait_ready, wait_stats

DEVICES = 20_000
CLIENTS = 200


def server_rss(server) -> int:
    process = psutil.Process(server.pid)
    return process.memory_info().rss + sum(child.memory_info().rss for child in process.children(recursive=True))


async def test_two_hundred_clients_that_never_read_a_snapshot_of_20000_devices_cost_little_and_are_closed_as_slow(
    make_server, broker, topic
):
    server = make_server(STREAM_SEND_TIMEOUT_SECONDS="3")
    await wait_ready(server)
    values = [
        json.dumps(
            {"data": {"DEVICE_ID": f"veh-{n:05d}", "SEQ": n, "LAT": 19.4, "LON": -99.1, "PAD": "x" * 250}}
        ).encode()
        for n in range(DEVICES)
    ]
    await produce(broker.bootstrap, topic, values)
    await wait_stats(server, lambda s: s["records"] >= DEVICES and s["devices_known"] == DEVICES, timeout=60)
    idle = server_rss(server)
    clients = []
    peak = idle
    try:
        for _ in range(CLIENTS):
            # A small receive buffer, and asyncio reading at most 8 KiB ahead: it stops reading.
            clients.append(await open_sse(f"{server.url}/api/v1/stream", receive_buffer=4096, limit=4096))
            peak = max(peak, server_rss(server))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            peak = max(peak, server_rss(server))
            if stats(server)["slow_client_closes"] >= CLIENTS:
                break
            await asyncio.sleep(0.1)
    finally:
        for client in clients:
            client.abort()
    print(
        f"\nRSS idle {idle / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB, "
        f"+{(peak - idle) / 2**20:.1f} MB for {CLIENTS} non-reading clients of {DEVICES} devices"
    )
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["slow_client_closes"] == CLIENTS, "each closed as slow, none left waiting"
    assert peak - idle < 150 * 2**20
