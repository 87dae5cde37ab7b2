"""The consumer actor: reads the topics from Kafka and hands record batches to the decoder.

It joins no consumer group. Every replica and every worker process must see every partition
(this is a fan-out, not a work queue), so the consumer subscribes with ``group_id=None``: aiokafka
then assigns it all partitions of the subscribed topics and reassigns when metadata shows new
ones (``NoGroupCoordinator`` in aiokafka's consumer). Nothing is committed and no group is left
behind on the broker when a replica goes away. Where to start is ``KAFKA_AUTO_OFFSET_RESET``.

The broker may be absent, hung, or restarted empty. The consumer keeps serving through all
three: connecting retries with capped exponential backoff and jitter (tenacity); a probe asks for
metadata every second, so ``/ready`` tells the truth about the broker; and a partition whose
position lies beyond the log end the broker reports (its log was reset) is repositioned per the
reset policy instead of waiting for offsets that will not come again for a long time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

import tenacity
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from supervisors import Actor, Mailbox

from siscom.config import Settings
from siscom.metrics import Metrics

logger = logging.getLogger(__name__)

#: How often the consumer checks that the broker answers and that positions are sane.
PROBE_INTERVAL = 1.0
#: How long a metadata request may take before the broker counts as unreachable.
PROBE_TIMEOUT = 2.0


@dataclass
class KafkaStatus:
    """What the consumer knows about the broker; read by ``/ready`` and the stats endpoint.

    Owned by the gateway rather than the actor, so it survives the consumer's restarts.
    """

    connected: bool = False
    #: True once every assigned partition has a fetch position: records produced from then on
    #: are delivered even with ``auto_offset_reset=latest``.
    positioned: bool = False
    assigned: set[TopicPartition] = field(default_factory=set)
    total_partitions: int = 0
    missing_topics: tuple[str, ...] = ()
    last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.connected and self.positioned and bool(self.assigned) and not self.missing_topics

    def reason(self) -> str:
        if not self.connected:
            return f"broker unreachable: {self.last_error or 'connecting'}"
        if self.missing_topics:
            return f"topics not found: {', '.join(self.missing_topics)}"
        if not self.assigned:
            return "no partitions assigned"
        if not self.positioned:
            return "partition positions not yet known"
        return "ready"


def consumer_options(settings: Settings) -> dict[str, object]:
    """Keyword arguments for :class:`aiokafka.AIOKafkaConsumer` from the settings."""
    options: dict[str, object] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "client_id": f"{settings.kafka_group_id}-{socket.gethostname()}-{os.getpid()}",
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.kafka_auto_offset_reset,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "fetch_min_bytes": settings.kafka_fetch_min_bytes,
        "fetch_max_bytes": settings.kafka_fetch_max_bytes,
        "max_partition_fetch_bytes": settings.kafka_max_partition_fetch_bytes,
        # New partitions and recreated topics show up within this long.
        "metadata_max_age_ms": 5000,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_password
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    return options


class Consumer(Actor):
    """Fetches record batches and puts them in the decoder's inbox (waiting when it is full)."""

    def __init__(self, settings: Settings, out: Mailbox, status: KafkaStatus, metrics: Metrics) -> None:
        super().__init__(name="consumer")
        self._settings = settings
        self._out = out
        self._status = status
        self._metrics = metrics

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(*self._settings.topics, **consumer_options(self._settings))
        try:
            await self._connect(consumer)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._fetch(consumer), name="consumer.fetch")
                tasks.create_task(self._probe(consumer), name="consumer.probe")
        finally:
            self._status.connected = False
            self._status.positioned = False
            await consumer.stop()
            logger.info("Kafka consumer stopped")

    async def _connect(self, consumer: AIOKafkaConsumer) -> None:
        cap = self._settings.kafka_reconnect_backoff_max_seconds
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential_jitter(initial=0.2, max=cap, jitter=min(1.0, cap / 4)),
            retry=tenacity.retry_if_exception_type((KafkaError, OSError)),
            before_sleep=self._log_connect_failure,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await consumer.start()
        self._status.connected = True
        self._status.last_error = None
        logger.info(
            "Connected to Kafka at %s, topics %s",
            ",".join(self._settings.kafka_bootstrap_servers),
            ", ".join(self._settings.topics),
        )

    def _log_connect_failure(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._status.connected = False
        self._status.last_error = f"{type(error).__name__}: {error}"
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "Cannot connect to Kafka at %s (attempt %d): %s; retrying in %.2f s",
            ",".join(self._settings.kafka_bootstrap_servers),
            state.attempt_number,
            self._status.last_error,
            delay,
        )

    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        max_records = self._settings.kafka_max_poll_records
        out = self._out
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            if not batches:
                continue
            records = [record for batch in batches.values() for record in batch]
            if logger.isEnabledFor(logging.DEBUG):
                for record in records:
                    logger.debug("Record %s[%d]@%d", record.topic, record.partition, record.offset)
            await out.put(records)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        status = self._status
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                topics = await asyncio.wait_for(consumer.topics(), PROBE_TIMEOUT)
                await self._review_assignment(consumer, topics)
            except (KafkaError, OSError, TimeoutError) as error:
                if status.connected:
                    logger.warning("Lost the Kafka broker: %s", type(error).__name__)
                status.connected = False
                status.last_error = f"{type(error).__name__}: {error}"
                continue
            if not status.connected:
                logger.info("Kafka broker reachable again")
                self._metrics.incr("broker_reconnects")
            status.connected = True
            status.last_error = None

    async def _review_assignment(self, consumer: AIOKafkaConsumer, topics: set[str]) -> None:
        """Refresh the partition counts and reposition partitions whose log was reset."""
        status = self._status
        wanted = self._settings.topics
        status.missing_topics = tuple(topic for topic in wanted if topic not in topics)
        total = sum(len(consumer.partitions_for_topic(topic) or ()) for topic in wanted)
        assigned = set(consumer.assignment())
        if len(assigned) < total and len(assigned) != len(status.assigned):
            logger.warning("Reading %d of %d partitions", len(assigned), total)
        status.total_partitions = total
        status.assigned = assigned
        beyond_end = []
        for partition in assigned:
            position = await asyncio.wait_for(consumer.position(partition), PROBE_TIMEOUT)
            highwater = consumer.highwater(partition)
            if highwater is not None and position > highwater:
                beyond_end.append((partition, position, highwater))
        status.positioned = bool(assigned)
        for partition, position, highwater in beyond_end:
            # The broker's log is shorter than where we stand: it was reset (restarted without
            # storage, topic recreated). Fetching from here would wait for offsets that may
            # never come; start again as a new consumer would.
            logger.warning(
                "%s[%d]: position %d is beyond the log end %d; resetting to %s",
                partition.topic, partition.partition, position, highwater,
                self._settings.kafka_auto_offset_reset,
            )
            if self._settings.kafka_auto_offset_reset == "earliest":
                await consumer.seek_to_beginning(partition)
            else:
                await consumer.seek_to_end(partition)
