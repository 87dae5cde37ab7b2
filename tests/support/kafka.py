"""Producing to and consuming from the test broker with aiokafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata


def _as_bytes(key: bytes | str | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    key: bytes | str | None = None,
    *,
    partition: int | None = None,
) -> list[RecordMetadata]:
    """Write `values` to `topic` in order and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=_as_bytes(key), partition=partition) for value in values]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    count: int | None,
    timeout: float = 10.0,
) -> list[ConsumerRecord]:
    """Read up to `count` records of `topic`, from the start of each partition.

    Returns as soon as `count` records arrived; fewer after `timeout`, for
    the test to assert on.  (To check that nothing more is there, ask for
    one more than expected.)  `count` None: all that arrives within
    `timeout`.  No consumer group is involved.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (count is None or len(records) < count) and (left := deadline - loop.time()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records[:count]
