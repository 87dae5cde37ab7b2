"""The decoder actor: parses each record once and builds its outgoing frame once.

Whatever the broker hands us, the decoder either turns a record into a :class:`~siscom.core.deliveries.Delivery`
or counts it as malformed and moves on: a bad record never stops the records behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from supervisors import Actor, Mailbox

from siscom.core.deliveries import Delivery
from siscom.metrics import Metric, Metrics
from siscom.core.protocol import alert_frame, message_frame
from siscom.core.records import MalformedRecord, decode_value

logger = logging.getLogger(__name__)

#: At most this many malformed-record lines per second reach the log; the rest are counted.
MALFORMED_LOG_PER_SECOND = 10


class Decoder(Actor):
    def __init__(
        self,
        inbox: Mailbox[Sequence[ConsumerRecord]],
        out: Mailbox[list[Delivery]],
        *,
        alerts_topic: str | None,
        max_record_bytes: int,
        metrics: Metrics,
    ) -> None:
        super().__init__(name="decoder", inbox=inbox)
        self._out = out
        self._alerts_topic = alerts_topic
        self._max_record_bytes = max_record_bytes
        self._metrics = metrics
        self._log_window = 0
        self._logged_in_window = 0

    async def receive(self, records: Sequence[ConsumerRecord]) -> None:
        frames: list[Delivery] = []
        alerts = malformed = unplaced = 0
        alerts_topic = self._alerts_topic
        max_bytes = self._max_record_bytes
        for record in records:
            try:
                decoded = decode_value(record.value, max_bytes=max_bytes)
            except MalformedRecord as error:
                malformed += 1
                self._log_malformed(record, error)
                continue
            if record.topic == alerts_topic:
                alerts += 1
                frames.append(Delivery(decoded.device_id, alert_frame(decoded.text), True, record.timestamp))
            else:
                position = decoded.position
                if position is None:
                    unplaced += 1
                frames.append(
                    Delivery(decoded.device_id, message_frame(decoded.text), False, record.timestamp, position)
                )
        self._metrics.incr(Metric.RECORDS, len(records))
        if alerts:
            self._metrics.incr(Metric.ALERTS, alerts)
        if malformed:
            self._metrics.incr(Metric.MALFORMED_RECORDS, malformed)
        if unplaced:
            self._metrics.incr(Metric.UNPLACED_RECORDS, unplaced)
        if frames:
            await self._out.put(frames)

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
            record.topic, record.partition, record.offset, error.reason, size,
            "; more this second are counted, not logged" if self._logged_in_window == MALFORMED_LOG_PER_SECOND else "",
        )
