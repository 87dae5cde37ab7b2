"""Memory per connection, by the number of ids subscribed, and a bound for the whole process.

Before: 100 clients subscribed to 1,000 distinct ids each cost about 430 KB per connection (about
4 GB at the default 10,000 connections), with no bound for the process. Device ids are now
interned and the per-device index holds few subscribers in a tuple instead of a set; equal
filters share one frozenset; and ``STREAM_MAX_SUBSCRIBED_IDS`` bounds the ids of all streams of a
process together: past it, new subscriptions are closed with 1013 and counted.
"""

from __future__ import annotations

import asyncio
import uuid

import psutil
from chaos.rawws import RawWebSocket, masked_frame
from support.status import wait_ready, wait_stats

CLIENTS = 100


def _rss(server) -> int:
    return psutil.Process(server.pid).memory_info().rss


async def _per_connection(make_server, ids_for) -> float:
    """Server memory per connection, in KB, for CLIENTS clients subscribed to ``ids_for(n)``."""
    server = make_server(STREAM_SNAPSHOT="false")
    await wait_ready(server)
    warm = [await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?device_ids=w{n}")) for n in range(5)]
    for client in warm:
        client.close()
    await wait_stats(server, lambda body: body["connections"] == 0)
    before = _rss(server)
    clients = []
    try:
        for n in range(CLIENTS):
            query = ",".join(ids_for(n))
            clients.append(await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?device_ids={query}")))
        await wait_stats(server, lambda body: body["connections"] == CLIENTS, timeout=30)
        await asyncio.sleep(0.5)
        return (_rss(server) - before) / CLIENTS / 1024
    finally:
        for client in clients:
            client.close()


async def test_memory_per_connection_at_10_100_and_1000_ids(make_server, scenario) -> None:
    scenario.title = "4a. memory per connection"
    scenario.target = f"{CLIENTS} clients; 1,000 distinct ids <= 340 KB (was 449), the same 1,000 <= 180 KB (was 262)"
    figures = {}
    for count in (10, 100, 1000):
        prefix = uuid.uuid4().hex[:6]
        figures[count] = await _per_connection(make_server, lambda n: [f"{prefix}-{n}-{i}" for i in range(count)])
        scenario.figure(f"{count} distinct ids each", f"{figures[count]:.1f} KB")
    prefix = uuid.uuid4().hex[:6]
    shared = await _per_connection(make_server, lambda n: [f"{prefix}-{i}" for i in range(1000)])
    scenario.figure("the same 1,000 ids each", f"{shared:.1f} KB")
    assert figures[1000] <= 340
    assert shared <= 180


async def test_subscriptions_past_the_process_bound_are_closed_with_1013_and_counted(make_server, scenario) -> None:
    scenario.title = "4b. subscribed ids per process"
    scenario.target = "past STREAM_MAX_SUBSCRIBED_IDS: 1013 at connect and on subscribe, counted"
    server = make_server(STREAM_MAX_SUBSCRIBED_IDS="250", STREAM_MAX_DEVICE_IDS="200")
    url = server.ws_url("/api/v1/stream?device_ids=")
    first = await RawWebSocket.connect(url + ",".join(f"a{i}" for i in range(100)))
    second = await RawWebSocket.connect(url + ",".join(f"b{i}" for i in range(100)))
    third = await RawWebSocket.connect(url + ",".join(f"c{i}" for i in range(100)))
    try:
        code, texts = await third.read_until_close(timeout=10)
        scenario.figure("third client of 100 ids (200 held)", f"close {code}, {texts[-1:]}")
        assert code == 1013 and b"subscription limit" in texts[-1]
        # 50 ids are left: a subscription of 60 more is refused, and the client closed.
        await first.send(
            masked_frame(b'{"action":"subscribe","device_ids":[' + b",".join(b'"x%d"' % i for i in range(60)) + b"]}")
        )
        code, texts = await first.read_until_close(timeout=10)
        scenario.figure("60 more ids on a subscribe message", f"close {code}")
        assert code == 1013
        body = await wait_stats(server, lambda body: body["connections"] == 1)
        scenario.figure("subscription_limit_refusals", body["subscription_limit_refusals"])
        assert body["subscription_limit_refusals"] == 2 and body["devices_subscribed"] == 100
    finally:
        for client in (first, second, third):
            client.close()
