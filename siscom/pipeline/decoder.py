"""The decoder actor: parses each record once and builds its outgoing frame once.

Whatever the broker hands us, the decoder either turns a record into a :class:`~siscom.core.deliveries.Delivery`
or counts it as malformed and moves on: a bad record never stops the records behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from siscom.core.cursors import LogPositions
from siscom.core.deliveries import Delivery, Progress, record_delivery
from siscom.core.records import MalformedRecord, decode_value
from siscom.metrics import Metric, Metrics
from siscom.pipeline.offsets import ReadOffsets
from supervisors import Actor, Mailbox

logger = logging.getLogger(__name__)

#: At most this many malformed-record lines per second reach the log; the rest are counted.
MALFORMED_LOG_PER_SECOND = 10


class Decoder(Actor):
    def __init__(
        self,
        inbox: Mailbox[Sequence[ConsumerRecord]],
        out: Mailbox[list[Delivery] | Progress],
        *,
        alerts_topic: str | None,
        max_record_bytes: int,
        metrics: Metrics,
        positions: LogPositions | None = None,
        offsets: ReadOffsets | None = None,
    ) -> None:
        """``positions`` (owned by the gateway) gives every frame its cursor; ``offsets`` tells it
        where reading starts on partitions that have had no record yet."""
        super().__init__(name="decoder", inbox=inbox)
        self._positions = positions
        self._offsets = offsets
        self._out = out
        self._alerts_topic = alerts_topic
        self._max_record_bytes = max_record_bytes
        self._metrics = metrics
        self._log_window = 0
        self._logged_in_window = 0

    async def receive(self, records: Sequence[ConsumerRecord]) -> None:
        """Decode a batch; an empty one is the consumer's word that start offsets were noted."""
        frames: list[Delivery] = []
        alerts = malformed = unplaced = 0
        alerts_topic = self._alerts_topic
        max_bytes = self._max_record_bytes
        positions = self._positions
        moved = positions is not None and (self._fill_start_offsets(positions) or bool(records))
        cursor = None
        topic_index = -1
        for record in records:
            if positions is not None:
                # The cursor is the dispatch vector just after this record; a malformed record
                # advances it too, so the next frame's cursor steps over it.
                topic_index = positions.topic_index(record.topic)
                positions.advance(topic_index, record.partition, record.offset + 1)
            try:
                decoded = decode_value(record.value, max_bytes=max_bytes)
            except MalformedRecord as error:
                malformed += 1
                self._log_malformed(record, error)
                continue
            if positions is not None:
                cursor = positions.cursor()
            alert = record.topic == alerts_topic
            if alert:
                alerts += 1
            elif decoded.position is None:
                unplaced += 1
            frames.append(
                record_delivery(
                    decoded,
                    alert=alert,
                    cursor=cursor,
                    timestamp_ms=record.timestamp,
                    topic_index=topic_index,
                    partition=record.partition,
                    offset=record.offset,
                )
            )
        if records:
            self._metrics.incr(Metric.RECORDS, len(records))
        if alerts:
            self._metrics.incr(Metric.ALERTS, alerts)
        if malformed:
            self._metrics.incr(Metric.MALFORMED_RECORDS, malformed)
        if unplaced:
            self._metrics.incr(Metric.UNPLACED_RECORDS, unplaced)
        if frames:
            await self._out.put(frames)
        elif moved and positions is not None:
            # No frame carries the new vector: the router must still learn it, in order.
            await self._out.put(Progress(positions.cursor()))

    def _fill_start_offsets(self, positions: LogPositions) -> bool:
        """Partitions with no record yet enter the vector at the offset reading starts from, which
        means the same on every replica: a cursor naming it there is honoured anywhere. True when
        one did."""
        if self._offsets is None:
            return False
        filled = False
        for partition, offset in self._offsets.start_offsets():
            if partition.topic in positions.topics:
                index = positions.topic_index(partition.topic)
                if not positions.known(index, partition.partition):
                    positions.advance(index, partition.partition, offset)
                    filled = True
        return filled

    def _log_malformed(self, record: ConsumerRecord, error: MalformedRecord) -> None:
        window = int(time.monotonic())
        if window != self._log_window:
            self._log_window, self._logged_in_window = window, 0
        self._logged_in_window += 1
        if self._logged_in_window > MALFORMED_LOG_PER_SECOND:
            return
        size = len(record.value) if record.value is not None else 0
        logger.warning(
            "Skipping malformed record %s[%d]@%d (%s, %d bytes)%s",
            record.topic,
            record.partition,
            record.offset,
            error.reason,
            size,
            "; more this second are counted, not logged" if self._logged_in_window == MALFORMED_LOG_PER_SECOND else "",
        )
