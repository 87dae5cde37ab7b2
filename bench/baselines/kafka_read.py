"""The baselines' one Kafka read loop: every record of the topic, as its device id and frame.

Both baselines read the log the same way (no consumer group, the gateway's Kafka settings from
the environment), so what they differ in is only how frames reach clients.
"""

from __future__ import annotations

import os
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer


class Hub(Protocol):
    records: int
    assigned: int

    def publish(self, device_id: str, frame: str) -> None: ...


async def consume(hub: Hub) -> None:
    """Read the topic for ever, handing each record's ``message`` frame to ``hub.publish``."""
    consumer = AIOKafkaConsumer(
        os.environ["KAFKA_TOPIC"],
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=None,
        auto_offset_reset=os.environ.get("KAFKA_AUTO_OFFSET_RESET", "latest"),
        fetch_max_wait_ms=int(os.environ.get("KAFKA_FETCH_MAX_WAIT_MS", "500")),
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            hub.assigned = len(consumer.assignment())
            for records in batches.values():
                for record in records:
                    hub.records += 1
                    device_id = orjson.loads(record.value)["data"]["DEVICE_ID"]
                    hub.publish(device_id, '{"event":"message","data":' + record.value.decode() + "}")
    finally:
        await consumer.stop()
