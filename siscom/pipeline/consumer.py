"""The consumer actor: reads the topics from Kafka and hands record batches to the decoder.

It joins no consumer group. Every replica and every worker process must see every partition
(this is a fan-out, not a work queue), so the consumer uses ``group_id=None`` and assigns itself
every partition of its topics, as the metadata shows them. Nothing is committed and no group is
left behind on the broker when a replica goes away.

The broker may be absent, hung, or restarted empty. The consumer keeps serving through all
three: connecting retries with capped exponential backoff and jitter (tenacity); a probe asks for
metadata every second, so ``/ready`` tells the truth about the broker, and a broker that stops
answering is let go and connected to afresh. Where each partition is read from, on the first
connection and after each later one, is the business of :mod:`siscom.pipeline.offsets`: in short,
``KAFKA_AUTO_OFFSET_RESET`` at the very start, right after the last record handed on ever after,
and from the beginning of any log that turns out to be newer than that record. What it asks of
aiokafka beyond its public API is in :mod:`siscom.pipeline.kafka`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import tenacity
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import IllegalStateError, KafkaError, RecordTooLargeError

from siscom.config import Settings
from siscom.metrics import Metric, Metrics
from siscom.pipeline.kafka import broker_connections, fetch_metadata, new_consumer, stop_consumer
from siscom.pipeline.offsets import ReadOffsets, Resumer
from siscom.pipeline.warmup import WarmUp
from supervisors import Actor, Mailbox

logger = logging.getLogger(__name__)

#: How often the consumer checks that the broker answers and notes the offsets reached.
PROBE_INTERVAL = 1.0
#: How long the probe's requests may take before the broker counts as lost.
PROBE_TIMEOUT = 2.0
#: How long one attempt to connect may take (a hung broker accepts connections, then says nothing).
CONNECT_TIMEOUT = 5.0
#: Longest wait for records in one fetch call, so that new partitions are placed promptly.
FETCH_WAIT = 0.25


@dataclass
class KafkaStatus:
    """What the consumer knows about the broker; read by ``/ready`` and the stats endpoint.

    Owned by the gateway rather than the actor, so it survives the consumer's restarts.
    """

    connected: bool = False
    #: True once every assigned partition has a fetch offset: records produced from then on
    #: are delivered even with ``auto_offset_reset=latest``.
    offsets_known: bool = False
    assigned: set[TopicPartition] = field(default_factory=set)
    total_partitions: int = 0
    missing_topics: tuple[str, ...] = ()
    last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.connected and self.offsets_known and bool(self.assigned) and not self.missing_topics

    def reason(self) -> str:
        if not self.connected:
            return f"broker unreachable: {self.last_error or 'connecting'}"
        if self.missing_topics:
            return f"topics not found: {', '.join(self.missing_topics)}"
        if not self.assigned:
            return "no partitions assigned"
        if not self.offsets_known:
            return "partition offsets not yet known"
        return "ready"


class BrokerLost(Exception):
    """The broker stopped answering: this connection is over. Expected, so not a crash."""


def describe(error: BaseException) -> str:
    """An error as one short line, its type named once (aiokafka's messages start with it)."""
    name, text = type(error).__name__, str(error)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


class Consumer(Actor):
    """Fetches record batches and puts them in the decoder's inbox (waiting when it is full).

    Its life is a series of connections. Each places every partition of the topics where
    :mod:`siscom.pipeline.offsets` says, then runs two tasks: the fetch loop, the only one that
    moves the read offsets, and a probe that asks the broker for metadata every second. When the probe
    gets no answer the connection is dropped and a new one made, with capped exponential backoff.
    A broker that is down or hung is an expected condition, not a crash: it never counts towards
    the supervisor's restart intensity, so a flapping broker cannot bring the tree down.
    """

    def __init__(
        self,
        settings: Settings,
        out: Mailbox,
        status: KafkaStatus,
        metrics: Metrics,
        offsets: ReadOffsets | None = None,
        *,
        warmup: WarmUp | None = None,
    ) -> None:
        """``warmup``: read the log back once, on the first connection, before reading live."""
        super().__init__(name="consumer")
        self._warmup = warmup
        self._settings = settings
        self._out = out
        self._status = status
        self._metrics = metrics
        #: Owned by the gateway when given, so that a restarted consumer resumes where this one was.
        self._offsets = offsets if offsets is not None else ReadOffsets()
        #: Every partition of the topics, as the latest metadata shows them.
        self._partitions: frozenset[TopicPartition] = frozenset()
        #: True while fetched records are on their way to the decoder: fetch offsets are then past
        #: records not yet handed on, and must not be noted as reached.
        self._handing_on = False

    async def run(self) -> None:
        connections = 0
        try:
            while True:
                consumer = await self._connect()
                connections += 1
                if connections > 1:
                    self._metrics.incr(Metric.BROKER_RECONNECTS)
                try:
                    await self._read(consumer)
                finally:
                    self._status.connected = False
                    self._status.offsets_known = False
                    await stop_consumer(consumer)
        finally:
            logger.info("Kafka consumer stopped")

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer with fresh metadata; retries with backoff until there is one."""
        cap = self._settings.kafka_reconnect_backoff_max_seconds
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=cap, jitter=min(1.0, cap / 4)),
            retry=tenacity.retry_if_exception_type((KafkaError, OSError, TimeoutError)),
            before_sleep=self._log_connect_failure,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                consumer = await self._start_consumer()
        self._status.connected = True
        self._status.last_error = None
        logger.info(
            "Connected to Kafka at %s, topics %s",
            ",".join(self._settings.kafka_bootstrap_servers),
            ", ".join(self._settings.topics),
        )
        return consumer

    async def _start_consumer(self) -> AIOKafkaConsumer:
        consumer = new_consumer(self._settings)
        try:
            # A hung broker accepts the TCP connection and never answers: do not wait for it.
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await consumer.start()
                self._review_metadata(await fetch_metadata(consumer))
        except BaseException:
            await stop_consumer(consumer)
            raise
        return consumer

    def _log_connect_failure(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._status.connected = False
        if self._warmup is not None:
            self._warmup.progress.broker_unreachable()
        if isinstance(error, TimeoutError):
            self._status.last_error = f"no answer within {CONNECT_TIMEOUT:g} s"
        else:
            self._status.last_error = describe(error) if error is not None else "unknown error"
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "Cannot connect to Kafka at %s (attempt %d): %s; retrying in %.2f s",
            ",".join(self._settings.kafka_bootstrap_servers),
            state.attempt_number,
            self._status.last_error,
            delay,
        )

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        """Read through ``consumer`` until the broker is lost."""
        resumer = Resumer(consumer, self._offsets)
        # Not a TaskGroup: on Python 3.11 it leaves our task marked as cancelled after a child
        # fails, which a connection ending is not.
        tasks = (
            asyncio.create_task(self._fetch(consumer, resumer), name="consumer.fetch"),
            asyncio.create_task(self._probe(consumer, resumer), name="consumer.probe"),
        )
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        error = next(iter(done)).exception()
        if not isinstance(error, BrokerLost):
            raise error or RuntimeError("a consumer task returned")
        self._status.last_error = str(error)
        logger.warning("Lost the Kafka broker (%s); reconnecting", error)

    async def _fetch(self, consumer: AIOKafkaConsumer, resumer: Resumer) -> None:
        max_records = self._settings.kafka_max_poll_records
        out, offsets, status = self._out, self._offsets, self._status
        if self._warmup is not None and not self._warmup.done:
            await self._warm(consumer)
        connections = broker_connections(consumer)
        self._handing_on = False
        while True:
            if resumer.assigned != self._partitions:
                await resumer.place(self._partitions)
                status.assigned = set(resumer.assigned)
                await self._note_start_offsets(consumer, resumer)
                # Every placed partition has a read offset now: ready without waiting for the probe.
                status.offsets_known = bool(resumer.assigned)
            if not resumer.assigned:
                await asyncio.sleep(FETCH_WAIT)  # no topic to read (yet)
                continue
            try:
                batches = await consumer.getmany(timeout_ms=int(FETCH_WAIT * 1000), max_records=max_records)
            except RecordTooLargeError as error:
                # aiokafka has stepped past it already; skip it like any malformed record.
                self._metrics.incr(Metric.MALFORMED_RECORDS)
                logger.warning("Skipping a record larger than the fetch size: %s", error)
                continue
            current = broker_connections(consumer)
            if any(current.get(node) is not connection for node, connection in connections.items()):
                logger.info("A connection to the broker broke and was made again; checking the logs read so far")
                for partition in resumer.recheck():
                    batches.pop(partition, None)
            connections = current
            self._handing_on = True
            batches = await resumer.admit(batches)
            if batches:
                records = [record for batch in batches.values() for record in batch]
                if logger.isEnabledFor(logging.DEBUG):
                    for record in records:
                        logger.debug("Record %s[%d]@%d", record.topic, record.partition, record.offset)
                await out.put(records)
                offsets.handed_on(batches)
            self._handing_on = False

    async def _warm(self, consumer: AIOKafkaConsumer) -> None:
        """Read the log back (see :mod:`siscom.pipeline.warmup`); live reading then starts where it ended."""
        assert self._warmup is not None
        try:
            await self._warmup.run(consumer, self._partitions, await fetch_metadata(consumer))
        except TimeoutError as error:
            raise BrokerLost("warm-up: the broker did not answer in time") from error
        except (KafkaError, OSError) as error:
            raise BrokerLost(f"warm-up: {describe(error)}") from error

    async def _note_start_offsets(self, consumer: AIOKafkaConsumer, resumer: Resumer) -> None:
        """Note where reading starts on partitions not read before, before any record is fetched,
        and tell the decoder (an empty batch): cursors name every partition from the first frame
        on, pings included, even while no record comes."""
        noted = False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                for partition in resumer.assigned:
                    if self._offsets.mark(partition) is None:
                        self._offsets.reached(partition, await consumer.position(partition))
                        noted = True
        except TimeoutError as error:
            raise BrokerLost(f"no start offsets within {PROBE_TIMEOUT:g} s") from error
        except (KafkaError, OSError) as error:
            raise BrokerLost(describe(error)) from error
        if noted:
            await self._out.put([])

    async def _probe(self, consumer: AIOKafkaConsumer, resumer: Resumer) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    self._review_metadata(await fetch_metadata(consumer))
                    await self._review_offsets(consumer, resumer)
            except TimeoutError as error:
                raise BrokerLost(f"no answer within {PROBE_TIMEOUT:g} s") from error
            except (KafkaError, OSError) as error:
                raise BrokerLost(describe(error)) from error

    def _review_metadata(self, cluster: ClusterMetadata) -> None:
        """Note the partitions of the topics; the fetch loop places them."""
        status = self._status
        wanted = self._settings.topics
        topics = cluster.topics()
        missing = tuple(topic for topic in wanted if topic not in topics)
        if missing != status.missing_topics:
            if missing:
                logger.warning("Topics not found: %s", ", ".join(missing))
            else:
                logger.info("All topics found: %s", ", ".join(wanted))
        status.missing_topics = missing
        partitions = frozenset(
            TopicPartition(topic, partition)
            for topic in wanted
            for partition in cluster.partitions_for_topic(topic) or ()
        )
        if self._partitions and partitions != self._partitions:
            logger.info("The topics now have %d partitions (were %d)", len(partitions), len(self._partitions))
        self._partitions = partitions
        status.total_partitions = len(partitions)

    async def _review_offsets(self, consumer: AIOKafkaConsumer, resumer: Resumer) -> None:
        """Note the offsets reached, publish the lag, and whether every partition has an offset."""
        lag = 0
        for partition in resumer.assigned:
            try:
                offset = await consumer.position(partition)  # aiokafka's name for the fetch offset
                highwater = consumer.highwater(partition)
            except IllegalStateError:
                continue  # the fetch loop placed the partitions anew meanwhile
            if not self._handing_on:
                self._offsets.reached(partition, offset)
            if highwater is not None:
                lag += max(0, highwater - offset)
        self._status.assigned = set(resumer.assigned)
        self._status.offsets_known = bool(resumer.assigned)
        # Records in the broker not yet read, over all partitions (as of the last fetch).
        self._metrics.gauge(Metric.PARTITION_LAG, lag)
