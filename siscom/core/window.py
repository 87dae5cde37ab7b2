"""The recent-records window: the last deliveries routed, in dispatch order, for resumes.

A client that reconnects within seconds or minutes gets what it missed from here, without
touching Kafka. The window is bounded by records and by bytes (frame text); it also knows, per
partition, the offset from which it holds every record (its *base*), so it can tell whether a
cursor can be served from it, and the cursor of the last delivery routed (the gateway's
dispatch cursor: what a client caught up with live has received).

Entries are held as plain tuples, not :class:`Delivery` objects: a plain tuple of strings,
numbers and a plain position tuple is untracked by the cyclic garbage collector after its first
collection, a named tuple never is. Tens of thousands of long-lived tracked objects, renewed at
the record rate, made the collector run full collections every few seconds (each one walks every
tracked object and stops the event loop for as long; see the benchmark's GC rows).

A resume reads only what came after its cursor: each partition's offsets are indexed, so finding
where to start is a binary search per partition, not a scan of the whole window (which, full,
costs milliseconds per resume: a storm of resumes would stall the event loop). Each device's
entries are indexed too: a client of a few devices reads only their entries, not every entry
after its cursor (in a reconnect storm of one-device dashboards, scanning the window per client
was most of the server's time).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.protocol import frame_cursor

#: A list's front is cut off once this many of its items are gone (and at least half of it).
_COMPACT_AFTER = 1024

_TEXT = Delivery._fields.index("text")
_TIMESTAMP_MS = Delivery._fields.index("timestamp_ms")


class _Entries:
    """The deliveries held (as plain tuples), oldest first, in a list whose front moves forward: sliceable from any
    entry's number (a deque is not). Entry numbers count every delivery appended."""

    __slots__ = ("items", "previous", "head", "dropped")

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...] | None] = []
        #: Beside each item: the number of the entry of the same device before it (-1: none).
        self.previous: list[int] = []
        #: Index in ``items`` of the oldest entry held.
        self.head = 0
        #: Entries cut off the list's front: the number of ``items[0]``.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    @property
    def next_number(self) -> int:
        return self.dropped + len(self.items)

    def oldest(self) -> tuple[Any, ...] | None:
        return self.items[self.head] if self.head < len(self.items) else None

    def popleft(self) -> tuple[Any, ...]:
        items, head = self.items, self.head
        old = items[head]
        assert old is not None
        items[head] = None  # the frame's memory goes now, not at the next compaction
        self.head = head + 1
        if self.head >= _COMPACT_AFTER and self.head * 2 >= len(items):
            del items[: self.head], self.previous[: self.head]
            self.dropped += self.head
            self.head = 0
        return old

    def since(self, number: int) -> list[tuple[Any, ...] | None]:
        return self.items[max(self.head, number - self.dropped) :]


class _PartitionIndex:
    """One partition's held offsets (ascending) and their entries' numbers."""

    __slots__ = ("offsets", "numbers", "head")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.numbers: list[int] = []
        self.head = 0

    def popleft(self) -> None:
        self.head += 1
        if self.head >= _COMPACT_AFTER and self.head * 2 >= len(self.offsets):
            del self.offsets[: self.head], self.numbers[: self.head]
            self.head = 0

    def first_at_or_after(self, offset: int) -> int | None:
        """The number of the first entry held at or after ``offset``, if any."""
        found = bisect_left(self.offsets, offset, self.head)
        return self.numbers[found] if found < len(self.offsets) else None


class RecentWindow:
    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._entries = _Entries()
        #: Per (topic index, partition): where its entries are.
        self._partitions: dict[tuple[int, int], _PartitionIndex] = {}
        #: Per device id: the number of its newest entry (devices with none held are not kept);
        #: each entry knows the one of its device before it (``_Entries.previous``). Numbers, not
        #: a list per device: nothing more for the garbage collector to walk.
        self._newest: dict[str, int] = {}
        self._bytes = 0
        #: Per topic index, per partition: the offset from which every record is held.
        self._base: list[list[int]] | None = None
        #: The highest offset seen per (topic index, partition), to notice a replaced log.
        self._last: dict[tuple[int, int], int] = {}
        #: The first offset held per (topic index, partition), since the window began.
        self._first: dict[tuple[int, int], int] = {}
        #: True while the base does not know every partition the cursors name.
        self._incomplete = False
        #: The cursor of the last delivery routed (None before the first).
        self.dispatched: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_timestamp_ms(self) -> int | None:
        oldest = self._entries.oldest()
        return None if oldest is None else oldest[_TIMESTAMP_MS]

    def extend(self, deliveries: Iterable[Delivery]) -> None:
        """Deliveries just routed, in order (the router's batch)."""
        entries, last, partitions, newest = self._entries, self._last, self._partitions, self._newest
        added = 0
        for delivery in deliveries:
            if delivery.offset < 0:
                continue
            key = (delivery.topic_index, delivery.partition)
            previous = last.get(key)
            if previous is not None and delivery.offset <= previous:
                # The log was replaced (read again from its beginning): older entries mean nothing.
                self.clear()
                entries, last, partitions, newest = self._entries, self._last, self._partitions, self._newest
                added = 0
            if previous is None:
                self._first[key] = delivery.offset
            last[key] = delivery.offset
            if self._base is None:
                cursor = frame_cursor(delivery.text)
                if cursor is None:
                    continue
                _, vector = cursors.decode(cursor)
                base = [list(offsets) for offsets in vector]
                base[delivery.topic_index][delivery.partition] = delivery.offset
                self._base = base
                self._incomplete = True
            index = partitions.get(key)
            if index is None:
                index = partitions[key] = _PartitionIndex()
            number = entries.next_number
            index.offsets.append(delivery.offset)
            index.numbers.append(number)
            entries.previous.append(newest.get(delivery.device_id, -1))
            newest[delivery.device_id] = number
            entries.items.append(tuple(delivery))
            added += len(delivery.text)
        self._bytes += added
        if self._incomplete and entries:
            cursor = frame_cursor(entries.items[-1][_TEXT])  # type: ignore[index]
            if cursor is not None:
                self._complete_base(cursors.decode(cursor)[1])
        self._trim()

    def progressed(self, cursor: str) -> None:
        """The dispatch cursor moved with no record routed (reading starts on partitions that had
        none yet): it is the dispatch cursor now, and where the window holds everything from on
        partitions it knew nothing of."""
        self.dispatched = cursor
        _, vector = cursors.decode(cursor)
        if self._base is None:
            # Nothing routed yet: every record routed from this vector on will be held.
            self._base = [list(offsets) for offsets in vector]
            self._incomplete = any(offset == cursors.UNKNOWN for offsets in vector for offset in offsets)
        elif self._incomplete:
            self._complete_base(vector)

    def _complete_base(self, vector: cursors.Vector) -> None:
        """Fill in partitions the base did not know yet (reading had not started on them when the
        window began): from the first of their records held, else from where the newest vector
        says reading them starts."""
        base = self._base
        if base is None:
            return
        incomplete = False
        for topic, offsets in enumerate(vector):
            held = base[topic]
            if len(held) < len(offsets):
                held.extend([cursors.UNKNOWN] * (len(offsets) - len(held)))
            for partition, offset in enumerate(offsets):
                if held[partition] != cursors.UNKNOWN:
                    continue
                first = self._first.get((topic, partition))
                if first is not None:
                    held[partition] = first
                elif offset != cursors.UNKNOWN:
                    held[partition] = offset
                else:
                    incomplete = True
        self._incomplete = incomplete

    def routed(self, last: Delivery) -> None:
        """The router handed on a batch ending with ``last``: its cursor is the dispatch cursor."""
        cursor = frame_cursor(last.text)
        if cursor is not None:
            self.dispatched = cursor

    def _trim(self) -> None:
        entries, base = self._entries, self._base
        while entries and (len(entries) > self.max_records or self._bytes > self.max_bytes):
            number = entries.dropped + entries.head
            old = Delivery._make(entries.popleft())
            self._partitions[(old.topic_index, old.partition)].popleft()
            if self._newest.get(old.device_id) == number:
                del self._newest[old.device_id]
            self._bytes -= len(old.text)
            assert base is not None
            offsets = base[old.topic_index]
            if old.partition >= len(offsets):
                offsets.extend([cursors.UNKNOWN] * (old.partition + 1 - len(offsets)))
            offsets[old.partition] = max(offsets[old.partition], old.offset + 1)

    def clear(self) -> None:
        self._entries = _Entries()
        self._partitions = {}
        self._newest = {}
        self._bytes = 0
        self._base = None
        self._last.clear()
        self._first.clear()
        self._incomplete = False

    def covers(self, vector: cursors.Vector) -> bool:
        """True when every record at or after ``vector`` that was routed is still held
        (partitions ``vector`` does not name count from offset 0)."""
        base = self._base
        if base is None:
            return False
        for topic, held in enumerate(base):
            offsets = vector[topic] if topic < len(vector) else ()
            for partition, start in enumerate(held):
                offset = offsets[partition] if partition < len(offsets) else 0
                if start == cursors.UNKNOWN or offset == cursors.UNKNOWN or offset < start:
                    return False
        return True

    def after(self, vector: cursors.Vector) -> Iterator[Delivery]:
        """The held deliveries at or after ``vector`` (partitions it does not name: all)."""
        return (delivery for delivery in self.steps_after(vector) if delivery is not None)

    def steps_after(self, vector: cursors.Vector, ids: frozenset[str] | None = None) -> Iterator[Delivery | None]:
        """The held deliveries at or after ``vector`` of ``ids`` (None: every device), as they
        are now, with None for each entry passed over (a replay takes them a bounded slice at a
        time: see :mod:`siscom.core.replayfeed`)."""
        entries = self._entries
        start = entries.next_number
        for (topic, partition), index in self._partitions.items():
            number = index.first_at_or_after(cursors.offset_in(vector, topic, partition))
            if number is not None and number < start:
                start = number
        if ids is not None and len(ids) * 2 < len(self._newest):
            numbers = self._numbers_of(ids, start, len(entries) // 2)
            if numbers is not None:
                return iter(self._of_devices(numbers, vector))
        # Taken now (a copy of the list from there on): the generator may run later, while more
        # deliveries are routed, and must not see them.
        return _following(entries.since(start), vector, ids)

    def _numbers_of(self, ids: frozenset[str], start: int, most: int) -> list[list[int]] | None:
        """Per device of ``ids`` held, the numbers of its entries from ``start`` on, ascending, by
        walking its chain back from its newest; None once more than ``most`` were found (then a
        scan of the window costs about as much)."""
        entries, newest = self._entries, self._newest
        previous, dropped = entries.previous, entries.dropped
        first = max(start, dropped + entries.head)
        found: list[list[int]] = []
        count = 0
        for device_id in ids:
            number = newest.get(device_id, -1)
            chain: list[int] = []
            while number >= first:
                chain.append(number)
                number = previous[number - dropped]
            if chain:
                count += len(chain)
                if count > most:
                    return None
                chain.reverse()
                found.append(chain)
        return found

    def _of_devices(self, numbers: list[list[int]], vector: cursors.Vector) -> list[Delivery | None]:
        """The deliveries numbered ``numbers`` (ascending lists), at or after ``vector``, in
        dispatch order, taken now."""
        items, dropped = self._entries.items, self._entries.dropped
        out: list[Delivery | None] = []
        for number in numbers[0] if len(numbers) == 1 else heapq.merge(*numbers):
            delivery = Delivery._make(items[number - dropped])  # type: ignore[arg-type]
            if delivery.offset >= cursors.offset_in(vector, delivery.topic_index, delivery.partition):
                out.append(delivery)
        return out


def _following(
    entries: list[tuple[Any, ...] | None], vector: cursors.Vector, ids: frozenset[str] | None
) -> Iterator[Delivery | None]:
    # From the first entry at or after the vector on, entries of other partitions that come
    # before it are passed over.
    for entry in entries:
        assert entry is not None
        delivery = Delivery._make(entry)
        start = cursors.offset_in(vector, delivery.topic_index, delivery.partition)
        if delivery.offset >= start and (ids is None or delivery.device_id in ids):
            yield delivery
        else:
            yield None
