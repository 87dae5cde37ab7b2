"""Scaling out: replicas started with one environment each read every partition.

The gateway is a fan-out. Whichever replica a client lands on must have every device's records,
so each replica reads all partitions itself, joining no consumer group: nothing on the broker
splits the partitions between replicas, and nothing is left behind there when they go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from support import ws_client
from support.http import http_get_json
from support.kafka import produce
from support.status import wait_ready, wait_stats
from support.workers import clients_on_both, start_two_workers

from siscom.dev.broker import create_topics


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}}).encode()


async def consumer_groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {group for group, _ in await admin.list_consumer_groups()}
    finally:
        await admin.close()


async def leave_a_group_behind(bootstrap: str, group: str, topic: str) -> None:
    """What a consumer that commits offsets does to the broker: creates a group there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.commit({partition: 0})
    finally:
        await consumer.stop()


async def receive_all(url: str, count: int) -> list[tuple[str, int]]:
    async with ws_client(url) as client:
        frames = [await client.next_frame() for _ in range(count)]
    return [(f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"]) for f in frames]


async def test_replicas_with_one_environment_each_read_every_partition_and_leave_no_group(
    server_factory, broker, topic_factory
):
    topic = await topic_factory(partitions=3)
    client_id = f"replica-{uuid.uuid4().hex[:8]}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": client_id}
    servers = [server_factory(env), server_factory(env)]
    for server in servers:
        body = await wait_ready(server)
        assert (body["assigned_partitions"], body["total_partitions"]) == (3, 3)

    async with ws_client(servers[0].ws_url()) as first, ws_client(servers[1].ws_url()) as second:
        for server in servers:
            await wait_stats(server, lambda s: s["connections"] == 1)
        for partition in range(3):
            await produce(
                broker.bootstrap, topic, [record(f"dev-{partition}", n) for n in range(5)], partition=partition
            )
        expected = {(f"dev-{p}", n) for p in range(3) for n in range(5)}
        for client in (first, second):
            frames = [await client.next_frame() for _ in range(15)]
            assert {(f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"]) for f in frames} == expected

    # A replica goes away and another takes its place, as in a rolling restart.
    servers[0].stop()
    await wait_ready(server_factory(env))

    # The broker knows groups when consumers leave them behind; ours left none.
    await leave_a_group_behind(broker.bootstrap, f"{client_id}-control", topic)
    groups = await consumer_groups(broker.bootstrap)
    assert f"{client_id}-control" in groups
    assert [group for group in groups if group.startswith(client_id) and group != f"{client_id}-control"] == []


async def test_partitions_that_appear_later_are_picked_up(server_factory, broker, topic_factory):
    """The topic grows from 2 to 4 partitions under a running replica.

    The test broker does not implement CreatePartitions (it does not list the API), so the
    topic grows by being recreated with more partitions; what the replica must do is the same:
    notice the new partitions in the metadata and read them.
    """
    topic = await topic_factory(partitions=2)
    server = server_factory({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic})
    body = await wait_ready(server)
    assert (body["assigned_partitions"], body["total_partitions"]) == (2, 2)

    async with ws_client(server.ws_url()) as client:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
        await create_topics(broker.bootstrap, {topic: 4})

        # Metadata is refreshed every 5 s: give it two rounds.
        deadline = time.monotonic() + 15
        while True:
            status, body = await asyncio.to_thread(http_get_json, f"{server.url}/ready")
            if status == 200 and (body["assigned_partitions"], body["total_partitions"]) == (4, 4):
                break
            assert time.monotonic() < deadline, f"/ready: {status} {body}\n{server.log_tail()}"
            await asyncio.sleep(0.2)

        for partition in range(4):
            await produce(broker.bootstrap, topic, [record(f"dev-{partition}", partition)], partition=partition)
        frames = [await client.next_frame(timeout=10) for _ in range(4)]
    assert sorted(f["data"]["data"]["SEQ"] for f in frames) == [0, 1, 2, 3]


async def test_each_worker_process_reads_every_partition(server_factory, broker, topic_factory):
    topic = await topic_factory(partitions=3)
    server = start_two_workers(server_factory, broker.bootstrap, topic)
    async with contextlib.AsyncExitStack() as stack:
        # The workers share the listening socket; open streams until both hold some.
        clients = await clients_on_both(stack, server)
        for partition in range(3):
            await produce(
                broker.bootstrap, topic, [record(f"dev-{partition}", n) for n in range(5)], partition=partition
            )
        expected = {(f"dev-{p}", n) for p in range(3) for n in range(5)}
        for client in clients:
            frames = [await client.next_frame(timeout=10) for _ in range(15)]
            assert {(f["data"]["data"]["DEVICE_ID"], f["data"]["data"]["SEQ"]) for f in frames} == expected
