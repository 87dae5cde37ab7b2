"""The snapshot writer actor: keeps the last-positions topic (``KAFKA_SNAPSHOT_TOPIC``).

Vehicles parked longer than the gateways' lookback are in no part of the log a gateway reads
back at start. This actor, behind the same supervised consumer as the gateway's, writes each
device's newest position to a compacted topic keyed by device id, which every gateway reads from
its beginning at start: key = device id, value = the record's value byte for byte, timestamp =
the record's own (gateways compare positions by it).

Each device is written at most once per ``STREAM_SNAPSHOT_WRITE_SECONDS``: a fleet reporting
every second costs the topic one record per device per interval, not one per report. What waits
to be written (:class:`LatestPositions`) is owned by the command, not the actor, so it outlives a
restart; on shutdown everything waiting is written before the process exits. A broker that is
away is waited for: writes that fail stay waiting and are tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import tenacity
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from siscom.config import Settings
from siscom.core.records import device_id_of
from siscom.pipeline.kafka import client_options, fetch_metadata, new_consumer, stop_consumer
from supervisors import Actor, Mailbox

logger = logging.getLogger(__name__)

#: Longest the writes of one round (and the last one, at shutdown) may take.
WRITE_TIMEOUT = 10.0
#: Longest one attempt to reach the broker may take.
CONNECT_TIMEOUT = 5.0


@dataclass
class LatestPositions:
    """Per device, the newest position not yet written, and when the device was last written."""

    #: Device id -> (Kafka timestamp, value).
    pending: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: Device id -> (Kafka timestamp written, time.monotonic() of the write).
    written: dict[str, tuple[int, float]] = field(default_factory=dict)

    def offer(self, device_id: str, timestamp: int, value: bytes) -> None:
        """A position of ``device_id``: kept unless an older one than what waits or was written."""
        waiting = self.pending.get(device_id)
        if waiting is not None and waiting[0] > timestamp:
            return
        done = self.written.get(device_id)
        if done is not None and done[0] > timestamp:
            return
        self.pending[device_id] = (timestamp, value)

    def due(self, now: float, interval: float) -> list[tuple[str, int, bytes]]:
        """The waiting positions whose device was written at least ``interval`` ago (all, for
        ``interval`` 0); taken out of waiting."""
        written = self.written
        due = [
            (device_id, timestamp, value)
            for device_id, (timestamp, value) in self.pending.items()
            if device_id not in written or now - written[device_id][1] >= interval
        ]
        for device_id, _, _ in due:
            del self.pending[device_id]
        return due

    def wrote(self, device_id: str, timestamp: int, now: float) -> None:
        self.written[device_id] = (timestamp, now)

    def retry(self, device_id: str, timestamp: int, value: bytes) -> None:
        """A write that failed waits again (unless a newer position came meanwhile)."""
        if device_id not in self.pending:
            self.pending[device_id] = (timestamp, value)


class SnapshotWriter(Actor):
    def __init__(self, settings: Settings, inbox: Mailbox[Sequence[ConsumerRecord]], latest: LatestPositions) -> None:
        super().__init__(name="snapshot-writer", inbox=inbox)
        self._settings = settings
        self._latest = latest
        self._interval = settings.stream_snapshot_write_seconds
        assert settings.kafka_snapshot_topic is not None
        self._topic: str = settings.kafka_snapshot_topic

    async def run(self) -> None:
        producer = await self._connect()
        rounds = asyncio.create_task(self._write_rounds(producer), name="snapshot-writer.rounds")
        try:
            await super().run()
        finally:
            rounds.cancel()
            await asyncio.wait((rounds,))
            # Shutting down: whatever waits is written now, whatever the interval.
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await self._write(producer, self._latest.due(time.monotonic(), 0.0))
            except (TimeoutError, KafkaError) as error:
                logger.warning("Positions not written at shutdown: %r", error)
            await producer.stop()

    async def receive(self, records: Sequence[ConsumerRecord]) -> None:
        max_bytes = self._settings.stream_max_record_bytes
        offer = self._latest.offer
        for record in records:
            value = record.value
            device_id = device_id_of(value, max_bytes=max_bytes)
            if device_id is not None and value is not None:  # a device id implies a value
                offer(device_id, record.timestamp, value)

    async def _write_rounds(self, producer: AIOKafkaProducer) -> None:
        pause = min(1.0, self._interval / 4)
        while True:
            await asyncio.sleep(pause)
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await self._write(producer, self._latest.due(time.monotonic(), self._interval))
            except (TimeoutError, KafkaError) as error:
                logger.warning("Cannot write positions to %s (%r); retrying", self._topic, error)

    async def _write(self, producer: AIOKafkaProducer, due: list[tuple[str, int, bytes]]) -> None:
        if not due:
            return
        latest = self._latest
        sent = []
        try:
            for device_id, timestamp, value in due:
                sent.append(await producer.send(self._topic, value, key=device_id.encode(), timestamp_ms=timestamp))
            await asyncio.gather(*sent)
        except BaseException:
            for device_id, timestamp, value in due:
                latest.retry(device_id, timestamp, value)
            raise
        now = time.monotonic()
        for device_id, timestamp, _ in due:
            latest.wrote(device_id, timestamp, now)
        logger.debug("Wrote %d positions to %s", len(due), self._topic)

    async def _connect(self) -> AIOKafkaProducer:
        """A started producer, the topic made if missing; waits for the broker (backoff)."""
        cap = self._settings.kafka_reconnect_backoff_max_seconds
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=cap, jitter=min(1.0, cap / 4)),
            retry=tenacity.retry_if_exception_type((KafkaError, OSError, TimeoutError)),
            before_sleep=lambda state: logger.warning(
                "Snapshot writer cannot reach Kafka (attempt %d): %r",
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._ensure_topic()
                producer = AIOKafkaProducer(**client_options(self._settings), acks="all", linger_ms=50)
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
        return producer

    async def _ensure_topic(self) -> None:
        """Create the topic, compacted, with as many partitions as ``KAFKA_TOPIC``, if missing."""
        settings = self._settings
        consumer = new_consumer(settings)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await consumer.start()
                cluster = await fetch_metadata(consumer)
        finally:
            await stop_consumer(consumer)
        if self._topic in cluster.topics():
            return
        partitions = len(cluster.partitions_for_topic(settings.kafka_topic) or ()) or 1
        admin = AIOKafkaAdminClient(**client_options(settings))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await admin.start()
                response = await admin.create_topics(
                    [NewTopic(self._topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
                )
        finally:
            await admin.close()
        for name, code, *_ in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"cannot create topic {name!r}: error code {code}")
        logger.info(
            "Created the last-positions topic %s (%d partitions, cleanup.policy=compact)", self._topic, partitions
        )
