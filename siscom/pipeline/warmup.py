"""Warm start: read back the part of the log a map needs before the process calls itself ready.

On its first connection to the broker, before it reads anything live, the consumer actor hands
its aiokafka consumer to :class:`WarmUp`. That reads, on every partition of the topics:

- the last-positions topic (``KAFKA_SNAPSHOT_TOPIC``, when set) from its beginning;
- ``KAFKA_TOPIC`` and ``KAFKA_ALERTS_TOPIC`` from the offset of ``now - lookback``
  (offsets-for-times),

each up to the log end found when warm-up began. What it read becomes the snapshot and the
recent-records window (:class:`~siscom.core.warmset.WarmSet`); none of it is routed to a client as
a live frame. The live stream then starts exactly at those ends: the read offsets are set there,
so nothing is read twice and nothing is skipped. Records written during warm-up are read live,
after it.

A broker lost during warm-up ends the connection as it would any other time; the next one warms
up again from scratch (nothing was applied). Streams wait for it at the gate of
:class:`~siscom.core.warming.WarmProgress`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata

from siscom.config import Settings
from siscom.core.cursors import LogPositions
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.warming import WarmProgress
from siscom.core.warmset import SNAPSHOT_TOPIC, WarmSet
from siscom.core.window import RecentWindow
from siscom.metrics import Metric, Metrics
from siscom.pipeline.offsets import ReadOffsets

logger = logging.getLogger(__name__)

#: One progress line in the log at most this often.
LOG_INTERVAL = 5.0
#: Longest wait for records in one fetch.
FETCH_MS = 200
#: Records taken in one step: the event loop serves requests (``/ready``, streams) between steps.
STEP_RECORDS = 5000
#: Longest one request about offsets may take.
OFFSETS_TIMEOUT = 10.0


class WarmUp:
    """Fills the gateway's snapshot and window from the log, once; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        progress: WarmProgress,
        *,
        table: SubscriptionTable,
        window: RecentWindow,
        positions: LogPositions,
        offsets: ReadOffsets,
        snapshot_topic: bool = True,
    ) -> None:
        """``snapshot_topic``: read ``KAFKA_SNAPSHOT_TOPIC`` too, when set (not for its own writer)."""
        self._settings = settings
        self._snapshot_topic = settings.kafka_snapshot_topic if snapshot_topic else None
        self._metrics = metrics
        self.progress = progress
        self._table = table
        self._window = window
        self._positions = positions
        self._offsets = offsets

    @property
    def done(self) -> bool:
        return self.progress.done

    async def run(
        self, consumer: AIOKafkaConsumer, partitions: frozenset[TopicPartition], cluster: ClusterMetadata
    ) -> None:
        """Warm up through ``consumer`` (started, no partition assigned); ``partitions``: those of
        the log topics; ``cluster``: fresh metadata, for the last-positions topic."""
        settings, progress = self._settings, self.progress
        snapshot_topic = self._snapshot_topic
        extra: list[TopicPartition] = []
        if snapshot_topic is not None:
            found = cluster.partitions_for_topic(snapshot_topic)
            if found is None:
                logger.warning(
                    "The last-positions topic %s does not exist (yet): warming from %s only",
                    snapshot_topic,
                    ", ".join(settings.topics),
                )
            extra = [TopicPartition(snapshot_topic, p) for p in sorted(found or ())]
        log_partitions = sorted(partitions)
        everything = extra + log_partitions
        progress.begin(len(everything))
        self._metrics.gauge(Metric.WARMUP_PARTITIONS_LEFT, len(everything))
        started = time.monotonic()
        lookback = settings.stream_snapshot_lookback_seconds
        async with asyncio.timeout(OFFSETS_TIMEOUT):
            ends = await consumer.end_offsets(everything) if everything else {}
            starts: dict[TopicPartition, int] = {}
            if extra:
                starts.update(await consumer.beginning_offsets(extra))
            if log_partitions:
                since_ms = int((time.time() - lookback) * 1000)
                found_times = await consumer.offsets_for_times({tp: since_ms for tp in log_partitions})
                for tp in log_partitions:
                    hit = found_times.get(tp)
                    # No record at or after that time (Kafka: none; the test broker: timestamp -1).
                    starts[tp] = ends[tp] if hit is None or hit.timestamp < 0 else min(hit.offset, ends[tp])
        warm = WarmSet(
            alerts_index=self._positions.topic_index(settings.kafka_alerts_topic)
            if settings.kafka_alerts_topic
            else None,
            window_records=settings.stream_replay_window_records,
            window_bytes=settings.stream_replay_window_bytes,
            max_record_bytes=settings.stream_max_record_bytes,
        )
        await self._read(consumer, warm, starts, ends)
        await self._apply(warm, {tp: ends[tp] for tp in log_partitions})
        seconds = time.monotonic() - started
        progress.finish()
        self._metrics.gauge(Metric.WARMUP_PARTITIONS_LEFT, 0)
        self._metrics.gauge(Metric.WARMUP_SECONDS, seconds)
        logger.info(
            "Warm: read %d records of %d partitions in %.2f s (%.0f records/s); %d devices known, "
            "%d records in the window%s",
            warm.records,
            len(everything),
            seconds,
            warm.records / seconds if seconds > 0 else 0.0,
            self._table.devices_known,
            len(self._window),
            f"; {warm.malformed} malformed records skipped" if warm.malformed else "",
        )

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        warm: WarmSet,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> None:
        positions, progress, metrics = self._positions, self.progress, self._metrics
        snapshot_topic = self._snapshot_topic
        # The last-positions topic is read to its end even if ListOffsets says it is empty.
        todo = {tp for tp in starts if starts[tp] < ends[tp] or tp.topic == snapshot_topic}
        if logger.isEnabledFor(logging.DEBUG):
            for tp in sorted(starts):
                logger.debug("Warm-up reads %s[%d] from %d to %d", tp.topic, tp.partition, starts[tp], ends[tp])
        total = len(starts)
        progress.read(0, total - len(todo))
        if not todo:
            return
        consumer.assign(sorted(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        index = {
            tp.topic: (SNAPSHOT_TOPIC if tp.topic == snapshot_topic else positions.topic_index(tp.topic)) for tp in todo
        }
        next_log = time.monotonic() + LOG_INTERVAL
        try:
            while todo:
                batches = await consumer.getmany(*todo, timeout_ms=FETCH_MS, max_records=STEP_RECORDS)
                read = 0
                for tp, records in batches.items():
                    end = ends[tp]
                    if records and records[-1].offset >= end and tp.topic != snapshot_topic:
                        records = [r for r in records if r.offset < end]
                    warm.add(index[tp.topic], tp.partition, records)
                    read += len(records)
                for tp in list(todo):
                    position, highwater = await consumer.position(tp), consumer.highwater(tp)
                    if tp.topic == snapshot_topic:
                        # Read to the end the fetches show: nothing reads this topic after warm-up,
                        # and the test broker's ListOffsets can report an end short of the true one.
                        if highwater is not None and position >= highwater:
                            todo.discard(tp)
                    # At the end found at start, or past it (records compacted or deleted away);
                    # records after it are read live.
                    elif position >= ends[tp] or (highwater is not None and position >= highwater):
                        todo.discard(tp)
                progress.read(read, total - len(todo))
                await asyncio.sleep(0)  # getmany does not yield while it has records to give
                metrics.incr(Metric.WARMUP_RECORDS, read)
                metrics.gauge(Metric.WARMUP_PARTITIONS_LEFT, len(todo))
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + LOG_INTERVAL
                    logger.info(
                        "Warming: %d records read, %d of %d partitions done", progress.records, total - len(todo), total
                    )
        finally:
            consumer.assign([])

    async def _apply(self, warm: WarmSet, ends: dict[TopicPartition, int]) -> None:
        """Fill the snapshot and the window, and start the live stream at ``ends``, before any live
        record is read. In steps, letting the event loop run between them: nothing else writes to
        the snapshot or the window meanwhile (no record is routed, streams wait at the gate)."""
        positions = self._positions
        parts = warm.finish_in_steps(
            positions, {(positions.topic_index(tp.topic), tp.partition): end for tp, end in ends.items()}
        )
        remember = self._table.remember
        for part in parts:
            if part.window:
                self._window.extend(part.window)
            for delivery in part.snapshot:
                remember(delivery)
            if part.cursor is not None:
                self._window.progressed(part.cursor)
            if part.malformed:
                self._metrics.incr(Metric.MALFORMED_RECORDS, part.malformed)
            await asyncio.sleep(0)
        self._table.viewports.take_remembered()
        for tp, end in ends.items():
            self._offsets.reached(tp, end)
