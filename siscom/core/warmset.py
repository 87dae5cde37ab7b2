"""What a process keeps of the log it reads at start (warm-up), and the deliveries made from it.

Warm-up reads up to an hour of every partition, a million records or more, and needs only two
things from them: each device's newest position (the snapshot) and the last records (the
recent-records window, so that resumes right after a deploy are served from memory). So a record
read costs one parse, to find its device; its frame is built, and its cursor encoded, only if it
is still among those two when reading ends. Memory stays within the window's own bounds plus one
record per device.

Which of two positions of a device is newer is decided by the records' Kafka timestamps: on
different partitions (or in the last-positions topic) offsets say nothing about it.

The window must hold, per partition, every record from some offset on (its *base*) in an order
in which each partition's offsets rise: :meth:`WarmSet.finish` merges the kept records of the
partitions by timestamp, and drops those a partition lost the ones before (its *cut*), so that
the window's base stays true. Its frames carry the cursors of that order; the live stream goes
on from the vector where it ends.

This module does no I/O: whoever reads the log feeds it (:mod:`siscom.pipeline.warmup`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from siscom.core.cursors import LogPositions
from siscom.core.deliveries import Delivery, record_delivery
from siscom.core.records import MalformedRecord, decode_value, device_id_hint, device_id_of

__all__ = ["SNAPSHOT_TOPIC", "LogRecord", "WarmResult", "WarmSet"]

#: The topic index of a record of the last-positions topic: in no cursor, never in the window.
SNAPSHOT_TOPIC = -1


class LogRecord(Protocol):
    """What is read of a Kafka record (aiokafka's ``ConsumerRecord`` is one)."""

    offset: int
    timestamp: int
    value: bytes | None


# A record kept: (timestamp, topic index, partition, offset, value). Plain tuples, compared
# by timestamp first: the heap of the window's candidates gives up its oldest.
_Kept = tuple[int, int, int, int, bytes]


@dataclass
class WarmResult:
    """The deliveries warm-up made: newest position per device, and the window's, in dispatch order."""

    snapshot: list[Delivery] = field(default_factory=list)
    window: list[Delivery] = field(default_factory=list)
    #: The dispatch cursor where warm-up ends, where the live stream goes on (None: no partition).
    cursor: str | None = None
    malformed: int = 0


class WarmSet:
    def __init__(
        self, *, alerts_index: int | None, window_records: int, window_bytes: int, max_record_bytes: int
    ) -> None:
        """``alerts_index``: the topic index of the alerts topic (its records go only to the window)."""
        self._alerts_index = alerts_index
        self._window_records = window_records
        self._window_bytes = window_bytes
        self._max_bytes = max_record_bytes
        #: Device id -> its newest position record.
        self.newest: dict[str, _Kept] = {}
        #: The window's candidates, oldest on top; their value bytes together.
        self._tail: list[_Kept] = []
        self._tail_bytes = 0
        #: Per (topic index, partition): the offset below which records left the window's candidates.
        self._cut: dict[tuple[int, int], int] = {}
        self.records = 0
        self.malformed = 0

    def add(self, topic_index: int, partition: int, records: Iterable[LogRecord]) -> None:
        """Records of one partition of a log topic (or of the last-positions topic, with
        :data:`SNAPSHOT_TOPIC`), in offset order."""
        newest = self.newest
        max_bytes = self._max_bytes
        positions = topic_index != self._alerts_index
        windowed = topic_index != SNAPSHOT_TOPIC and self._window_records > 0 and self._window_bytes > 0
        tail, cut = self._tail, self._cut
        window_records, window_bytes = self._window_records, self._window_bytes
        count = malformed = 0
        for record in records:
            count += 1
            value = record.value
            if not value:  # no device, no frame: for positions and the window alike
                malformed += 1
                continue
            if positions:
                # Most records name their device at their start: a full parse is kept for the rest.
                device_id = device_id_hint(value) if len(value) <= max_bytes else None
                if device_id is None:
                    device_id = device_id_of(value, max_bytes=max_bytes)
                if device_id is None:
                    malformed += 1
                    continue
                kept = (record.timestamp, topic_index, partition, record.offset, value)
                old = newest.get(device_id)
                if old is None or _newer(kept, old):
                    newest[device_id] = kept
            else:
                kept = (record.timestamp, topic_index, partition, record.offset, value)
            if windowed:
                self._tail_bytes += len(value)
                if len(tail) < window_records:
                    heapq.heappush(tail, kept)
                else:  # full: the oldest of the candidates and this one, one goes
                    gone = heapq.heappushpop(tail, kept)
                    self._tail_bytes -= len(gone[4])
                    key = (gone[1], gone[2])
                    if gone[3] >= cut.get(key, 0):
                        cut[key] = gone[3] + 1
                if self._tail_bytes > window_bytes:
                    self._drop_oldest()
        self.records += count
        self.malformed += malformed

    def _drop_oldest(self) -> None:
        tail, cut = self._tail, self._cut
        while tail and (len(tail) > self._window_records or self._tail_bytes > self._window_bytes):
            _, topic_index, partition, offset, value = heapq.heappop(tail)
            self._tail_bytes -= len(value)
            key = (topic_index, partition)
            if offset + 1 > cut.get(key, 0):
                cut[key] = offset + 1

    def finish(self, positions: LogPositions, ends: Mapping[tuple[int, int], int]) -> WarmResult:
        """All of :meth:`finish_in_steps` at once."""
        result = WarmResult()
        for part in self.finish_in_steps(positions, ends):
            result.window += part.window
            result.snapshot += part.snapshot
            result.cursor, result.malformed = part.cursor, part.malformed
        return result

    def finish_in_steps(
        self, positions: LogPositions, ends: Mapping[tuple[int, int], int], step: int = 2000
    ) -> Iterator[WarmResult]:
        """Build the deliveries, at most about ``step`` at a time (the caller lets the event loop
        run in between: tens of thousands of frames take seconds to build); leave ``positions``
        at ``ends`` (per topic index and partition: where the live stream starts reading).

        The parts hold the window's deliveries in order; the last one holds the snapshot, the
        cursor and the count of malformed records."""
        malformed = self.malformed
        by_partition: dict[tuple[int, int], list[_Kept]] = {key: [] for key in ends}
        cut = self._cut
        for kept in self._tail:
            key = (kept[1], kept[2])
            if key in by_partition and kept[3] >= cut.get(key, 0):
                by_partition[key].append(kept)
        self._tail = []
        for key, kept_list in by_partition.items():
            kept_list.sort(key=_offset)
            # The window holds every record of this partition from its first kept one (or none).
            positions.advance(key[0], key[1], kept_list[0][3] if kept_list else ends[key])
        alerts_index, max_bytes = self._alerts_index, self._max_bytes
        window: list[Delivery] = []
        for timestamp, topic_index, partition, offset, value in heapq.merge(*by_partition.values()):
            positions.advance(topic_index, partition, offset + 1)
            try:
                decoded = decode_value(value, max_bytes=max_bytes)
            except MalformedRecord:
                malformed += topic_index == alerts_index  # positions were counted as they were read
                continue
            window.append(
                record_delivery(
                    decoded,
                    alert=topic_index == alerts_index,
                    cursor=positions.cursor(),
                    timestamp_ms=timestamp,
                    topic_index=topic_index,
                    partition=partition,
                    offset=offset,
                )
            )
            if len(window) >= step:
                yield WarmResult(window=window)
                window = []
        for (topic_index, partition), end in ends.items():
            positions.advance(topic_index, partition, end)
        last = WarmResult(window=window, cursor=positions.cursor() if ends else None)
        snapshot: dict[str, tuple[_Kept, Delivery]] = {}
        for number, kept in enumerate(self.newest.values(), 1):
            if number % step == 0:
                yield WarmResult()
            timestamp, topic_index, partition, offset, value = kept
            try:
                decoded = decode_value(value, max_bytes=max_bytes)
            except MalformedRecord:
                # Found by its hint, and broken further on: the device's newest report is unusable.
                malformed += 1
                continue
            if topic_index == SNAPSHOT_TOPIC:
                partition = offset = -1
            delivery = record_delivery(
                decoded,
                alert=False,
                cursor=last.cursor,
                timestamp_ms=timestamp,
                topic_index=topic_index,
                partition=partition,
                offset=offset,
            )
            # A hint that named another device than the record does (it names it twice).
            other = snapshot.get(decoded.device_id)
            if other is None or _newer(kept, other[0]):
                snapshot[decoded.device_id] = (kept, delivery)
        self.newest = {}
        last.snapshot = [delivery for _, delivery in snapshot.values()]
        last.malformed = malformed
        yield last


def _offset(kept: _Kept) -> int:
    return kept[3]


def _newer(kept: _Kept, old: _Kept) -> bool:
    """Whether ``kept`` replaces ``old`` as its device's newest: a later Kafka timestamp; at an
    equal one, a later record of the same partition, or any log record over the last-positions
    topic's copy."""
    if kept[0] != old[0]:
        return kept[0] > old[0]
    return old[1] == SNAPSHOT_TOPIC or (kept[1] == old[1] and kept[2] == old[2])
