"""Warm start: a process reads the log back before it is ready, so a new replica shows the whole fleet.

Vehicles report and park; replicas started afterwards must give a new dashboard every vehicle's
newest position, though none of them reports again. (The test broker indexes times by when it
appended a record: a lookback in these tests is real elapsed time.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from support import ws_client
from support.fleet import park_fleet, parked_at, record, snapshot_of
from support.http import http_get_json
from support.kafka import produce
from support.status import wait_ready

from bench.producer import fill


def env_for(broker, topic: str, **more: str) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, **more}


async def test_replicas_started_after_the_fleet_parked_serve_every_vehicles_newest_position_alike(
    server_factory, broker, topic_factory
):
    topic = await topic_factory(partitions=3)
    newest = await park_fleet(broker.bootstrap, topic, vehicles=100, partitions=3)

    cold = server_factory(env_for(broker, topic, STREAM_SNAPSHOT_LOOKBACK_SECONDS="0"))
    first = server_factory(env_for(broker, topic))
    await wait_ready(cold)
    body = await wait_ready(first)
    assert body["status"] == "ready"
    await asyncio.sleep(1.5)
    second = server_factory(env_for(broker, topic))
    await wait_ready(second)

    # Without warm-up (what every replica did before): nothing until the vehicles report again.
    assert await snapshot_of(cold.ws_url()) == []
    snapshots = [await snapshot_of(server.ws_url()) for server in (first, second)]
    for frames in snapshots:
        assert len(frames) == len(newest)  # one per device: nothing older, nothing twice
        assert dict(frames) == newest
    assert sorted(snapshots[0]) == sorted(snapshots[1])

    # Named devices and live records work on a warm snapshot as on any other.
    async with ws_client(first.ws_url("/api/v1/stream?device_ids=veh-7,veh-8")) as client:
        got = {
            (f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"])
            for f in [await client.next_frame(), await client.next_frame()]
        }
        assert got == {("veh-7", 2), ("veh-8", 2)}
        await produce(broker.bootstrap, topic, [record("veh-7", 3)], partition=0)
        frame = await client.next_frame(timeout=10)
        assert (frame["data"]["data"]["DEVICE_ID"], frame["data"]["data"]["SEQ"]) == ("veh-7", 3)

    stats = http_get_json(f"{first.url}/api/v1/stream/stats")[1]
    assert stats["warmup"]["status"] == "warm"
    assert stats["warmup"]["records_read"] == 203
    assert stats["warmup_records"] == 203


async def test_a_short_lookback_leaves_vehicles_that_reported_before_it_out(server_factory, broker, topic_factory):
    topic = await topic_factory(partitions=2)
    await produce(broker.bootstrap, topic, [record("early", 1)], partition=0)
    await asyncio.sleep(12.0)
    await produce(broker.bootstrap, topic, [record("late", 1)], partition=1)
    await produce(broker.bootstrap, topic, [record("marker", 0)], partition=0)

    # 9 s back from the start: past "early" (12 s before), and "late" even if starting takes 8 s.
    server = server_factory(env_for(broker, topic, STREAM_SNAPSHOT_LOOKBACK_SECONDS="9"))
    await wait_ready(server)
    assert sorted(await snapshot_of(server.ws_url())) == [("late", 1), ("marker", 0)]


async def test_a_client_connected_during_warm_up_misses_nothing_and_gets_nothing_twice(
    server_factory, broker, topic_factory
):
    topic = await topic_factory(partitions=2)
    # Enough lookback to keep the process warming for a moment.
    await fill(broker.bootstrap, topic, 150_000, devices=500)
    await produce(broker.bootstrap, topic, [record("parked", 1)], partition=0)
    for partition in range(2):
        await produce(broker.bootstrap, topic, [record(f"marker-{partition}", 0)], partition=partition)

    server = server_factory(env_for(broker, topic))
    async with ws_client(server.ws_url()) as client:
        # The client is in before the warm-up ends: the process is still connecting to the broker
        # ("not ready", no partition assigned yet) or already warming; wait for the warming.
        connecting_until = time.monotonic() + 30
        while True:
            status, body = await asyncio.to_thread(http_get_json, f"{server.url}/ready")
            if body.get("status") != "not ready" or time.monotonic() > connecting_until:
                break
            await asyncio.sleep(0.05)
        assert status == 503 and body["status"] == "warming", body
        assert {"records_read", "partitions_done", "partitions_total"} <= set(body)

        # Vehicles report while the process warms, and on after it: each once, so that conflation
        # (a client that falls behind gets each device's newest) cannot hide a loss.
        reported: list[str] = []
        ready_at = None
        deadline = time.monotonic() + 60
        while ready_at is None or time.monotonic() < ready_at + 1.0:
            assert time.monotonic() < deadline, server.log_tail()
            device = f"moving-{len(reported)}"
            await produce(broker.bootstrap, topic, [record(device, 1)], partition=len(reported) % 2)
            reported.append(device)
            if ready_at is None and (await asyncio.to_thread(http_get_json, f"{server.url}/ready"))[0] == 200:
                ready_at = time.monotonic()
                during = len(reported)
            await asyncio.sleep(0.05)

        frames = []
        while True:
            try:
                frame = await client.next_frame(timeout=2.0)
            except TimeoutError:
                break
            frames.append(frame["data"]["data"]["DEVICE_ID"])

    assert during >= 2  # some reported while the process warmed
    assert frames.count("parked") == 1
    got = [device for device in frames if device.startswith("moving-")]
    assert sorted(got) == sorted(reported)  # every one, none twice


async def test_a_replica_killed_and_started_again_behind_nginx_keeps_its_dashboards_full(
    server_factory, broker, topic_factory, nginx_factory
):
    topic = await topic_factory(partitions=3)
    newest = await park_fleet(broker.bootstrap, topic, vehicles=30, partitions=3)
    env = env_for(broker, topic)
    server = server_factory(env)
    await wait_ready(server)
    proxy = nginx_factory([server.url.removeprefix("http://")])
    assert dict(await snapshot_of(proxy.ws_url())) == newest

    # The process dies (OOM, node lost) and comes back on the same address, with no vehicle
    # reporting meanwhile; dashboards reconnect through nginx as soon as they can.
    server.kill()
    again = server_factory(env, port=server.port, started=False)
    again.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            frames = await snapshot_of(proxy.ws_url())
            break
        except Exception:  # 502 from nginx while nothing listens
            assert time.monotonic() < deadline, again.log_tail()
            await asyncio.sleep(0.2)
    assert dict(frames) == newest and len(frames) == len(newest)


async def test_a_warm_replica_serves_boxes_and_resumes_right_after_a_deploy_from_memory(
    server_factory, broker, topic_factory
):
    topic = await topic_factory(partitions=2)
    await park_fleet(broker.bootstrap, topic, vehicles=20, partitions=2)
    env = env_for(broker, topic)
    old = server_factory(env)
    await wait_ready(old)

    # A dashboard on the old replica, up to date as of one live record.
    async with ws_client(old.ws_url("/api/v1/stream?device_ids=veh-1,veh-2")) as client:
        assert len([await client.next_frame(), await client.next_frame()]) == 2
        await produce(broker.bootstrap, topic, [record("veh-1", 3)], partition=1)
        frame = await client.next_frame(timeout=10)
        assert frame["data"]["data"]["SEQ"] == 3
        cursor = frame["id"]
    # While it is away (the deploy), its vehicles report.
    await produce(broker.bootstrap, topic, [record("veh-1", 4)], partition=1)
    await produce(broker.bootstrap, topic, [record("veh-2", 3)], partition=0)

    new = server_factory(env)
    await wait_ready(new)
    async with ws_client(new.ws_url(f"/api/v1/stream?device_ids=veh-1,veh-2&cursor={cursor}")) as client:
        resumed = await client.next_frame()
        assert resumed == {"event": "resumed", "data": {"recovered": True}}
        missed = {
            (f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"])
            for f in [await client.next_frame(), await client.next_frame()]
        }
        assert missed == {("veh-1", 4), ("veh-2", 3)}
        with contextlib.suppress(TimeoutError):
            extra = await client.next_frame(timeout=1.0)
            raise AssertionError(f"nothing more was missed: {extra}")
    stats = http_get_json(f"{new.url}/api/v1/stream/stats")[1]
    assert stats["history_reads"] == 0 and stats["resumes_recovered"] == 1  # served from the warm window

    # A box on the warm snapshot: the parked vehicles in it, newest position, none outside.
    lat_low, lat_high = parked_at(5)[0] - 0.001, parked_at(9)[0] + 0.001
    async with ws_client(new.ws_url(f"/api/v1/stream?bbox=-100.5,{lat_low},-99.5,{lat_high}")) as client:
        frames = []
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(await client.next_frame(timeout=1.0))
    assert sorted((f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"]) for f in frames) == [
        (f"veh-{v}", 2) for v in range(5, 10)
    ]
