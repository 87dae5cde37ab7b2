"""Reading the log's past for resumes older than the window, and for ``since``.

One reader per process, with one Kafka consumer of its own (no group, manual assignment), made
on first use. Concurrent replays share reads: requests that arrive while a read is under way wait
for the next round, and a round reads each partition once, from the earliest start to the latest
end any of its requests asked for; each request then gets its own span of that round's records
(:class:`~siscom.core.replayfeed.LogSpan`: a range of one shared list, not a copy), and each
record is decoded once for all of them, by the first replay that reaches it. So a storm of
resumes, or a hundred clients asking for the last minute at once, costs a small number of reads
and one decode per partition, not one consumer, or one copy, per client.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from siscom.config import Settings
from siscom.core.replayfeed import LogSpan, SharedLog, raw_record
from siscom.metrics import Metric, Metrics
from siscom.pipeline.kafka import new_consumer, stop_consumer

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest a round may go without progress (connecting, or a fetch that brings no record)
#: before its requests fail; a long read that keeps bringing records goes on.
ROUND_TIMEOUT = 10.0
#: One fetch waits at most this long for records.
FETCH_MS = 200

Ranges = dict[TopicPartition, tuple[int, int]]
Records = dict[TopicPartition, list[tuple[int, int, bytes | None]]]
Spans = dict[TopicPartition, LogSpan]


class HistoryUnavailable(Exception):
    """The log could not be read (no broker, a timeout)."""


@dataclass
class _Request:
    ranges: Ranges
    done: asyncio.Future[Spans] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class HistoryReader:
    def __init__(
        self, settings: Settings, metrics: Metrics, *, consumer: Callable[[Settings], AIOKafkaConsumer] = new_consumer
    ) -> None:
        """``consumer`` makes the reader's Kafka consumer (not yet started), on first use and
        after a failure."""
        self._settings = settings
        self._metrics = metrics
        self._new_consumer = consumer
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Reads of each partition since start (shown in the stats: shared reads keep it small).
        self.reads: Counter[TopicPartition] = Counter()

    async def read(self, ranges: Ranges) -> Spans:
        """Every record in ``[start, end)`` of each partition, in log order (partitions with an
        empty range are left out)."""
        ranges = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
        if not ranges:
            return {}
        request = _Request(ranges)
        self._pending.append(request)
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="history.reader")
        return await request.done

    async def offsets_for_time(
        self, partitions: list[TopicPartition], timestamp_ms: int
    ) -> dict[TopicPartition, int | None]:
        """Per partition, the first offset whose record's timestamp is at or after ``timestamp_ms``;
        None when there is none (the time is after the last record)."""
        async with self._lock:
            consumer = await self._connected()
            found = await self._asking(consumer.offsets_for_times({tp: timestamp_ms for tp in partitions}))
        result: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            hit = found.get(tp)
            # tansu answers offset 0 with timestamp -1 for a time after its last record, where
            # Kafka answers none: both mean "nothing at or after that time". (Not the log end
            # from ListOffsets: tansu's can lag the true end after a burst of writes.)
            result[tp] = None if hit is None or hit.timestamp < 0 else hit.offset
        return result

    async def log_bounds(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Per partition, the first offset still held and the log end (ListOffsets)."""
        async with self._lock:
            consumer = await self._connected()
            starts = await self._asking(consumer.beginning_offsets(partitions))
            ends = await self._asking(consumer.end_offsets(partitions))
        return starts, ends

    async def _asking(self, question: Awaitable[T]) -> T:
        """The broker's answer to ``question``, within the round's time; any failure (a timeout,
        a broker error, a lost connection) is :class:`HistoryUnavailable`, and the consumer is
        made anew next time: a replay answers it (``recovered: false``), it does not crash."""
        try:
            async with asyncio.timeout(ROUND_TIMEOUT):
                return await question
        except Exception as error:
            await self._drop_consumer()
            raise HistoryUnavailable(f"the broker did not answer: {error!r}") from error

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait((self._worker,))
        for request in self._pending:
            if not request.done.done():
                request.done.set_exception(HistoryUnavailable("stopping"))
        self._pending.clear()
        if self._consumer is not None:
            await stop_consumer(self._consumer)
            self._consumer = None

    async def _connected(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = self._new_consumer(self._settings)
            try:
                async with asyncio.timeout(ROUND_TIMEOUT):
                    await consumer.start()
            except BaseException as error:
                await stop_consumer(consumer)
                if isinstance(error, asyncio.CancelledError):
                    raise
                raise HistoryUnavailable(f"cannot reach the broker: {error!r}") from error
            self._consumer = consumer
        return self._consumer

    async def _drop_consumer(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)

    async def _work(self) -> None:
        while self._pending:
            requests, self._pending = self._pending, []
            self._wakeup.clear()
            merged: Ranges = {}
            for request in requests:
                for tp, (start, end) in request.ranges.items():
                    low, high = merged.get(tp, (start, end))
                    merged[tp] = (min(low, start), max(high, end))
            try:
                async with self._lock:
                    records = await self._read_round(merged)
            except Exception as error:  # the requests fail; the next round starts afresh
                logger.warning("Reading the log for replays failed: %r", error)
                await self._drop_consumer()
                for request in requests:
                    if not request.done.done():
                        request.done.set_exception(HistoryUnavailable(repr(error)))
                continue
            logs = {tp: SharedLog(batch, self._settings.stream_max_record_bytes) for tp, batch in records.items()}
            del records
            for request in requests:
                if request.done.done():
                    continue
                request.done.set_result(
                    {tp: _span(logs[tp], start, end) for tp, (start, end) in request.ranges.items()}
                )
            del logs, requests

    async def _read_round(self, ranges: Ranges) -> Records:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(ROUND_TIMEOUT) as deadline:
            consumer = await self._connected()
            partitions = sorted(ranges)
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, ranges[tp][0])
                self.reads[tp] += 1
            self._metrics.incr(Metric.HISTORY_READS, len(partitions))
            records: Records = {tp: [] for tp in partitions}
            open_partitions = set(partitions)
            while open_partitions:
                batches = await consumer.getmany(*open_partitions, timeout_ms=FETCH_MS, max_records=5000)
                if any(batches.values()):
                    deadline.reschedule(loop.time() + ROUND_TIMEOUT)
                for tp, batch in batches.items():
                    end = ranges[tp][1]
                    records[tp].extend(raw_record(r.offset, r.timestamp, r.value) for r in batch if r.offset < end)
                    if batch and batch[-1].offset >= end - 1:
                        open_partitions.discard(tp)
                for tp in list(open_partitions):
                    # Past the end already (records deleted or compacted away), or the log ends first.
                    position = await consumer.position(tp)
                    highwater = consumer.highwater(tp)
                    if position >= ranges[tp][1] or (highwater is not None and position >= highwater):
                        open_partitions.discard(tp)
            consumer.assign([])
            return records


def _span(log: SharedLog, start: int, end: int) -> LogSpan:
    """The records of ``log`` at offsets ``[start, end)``."""
    return LogSpan(log, bisect_left(log.offsets, start), bisect_left(log.offsets, end))
