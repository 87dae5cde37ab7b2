"""The recent-records window: the last deliveries routed, in dispatch order, for resumes.

A client that reconnects within seconds or minutes gets what it missed from here, without
touching Kafka.

Entries are held as plain tuples, not :class:`Delivery` objects: a plain tuple of strings,
numbers and a plain position tuple is untracked by the cyclic garbage collector after its first
collection, a named tuple never is. Tens of thousands of long-lived tracked objects, renewed at
the record rate, made the collector run full collections every few seconds (each one walks every
tracked object and stops the event loop for as long; see the benchmark's GC rows). The window is bounded by records and by bytes (frame text); it also knows, per
partition, the offset from which it holds every record (its *base*), so it can tell whether a
cursor can be served from it, and the cursor of the last delivery routed (the gateway's
dispatch cursor: what a client caught up with live has received).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.protocol import frame_cursor

_TIMESTAMP_MS = Delivery._fields.index("timestamp_ms")


class RecentWindow:
    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        #: ``tuple(delivery)`` per delivery (see the module docstring); fields by _TEXT etc.
        self._entries: deque[tuple] = deque()
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
        return self._entries[0][_TIMESTAMP_MS] if self._entries else None

    def extend(self, deliveries: Iterable[Delivery]) -> None:
        """Deliveries just routed, in order (the router's batch)."""
        entries, last = self._entries, self._last
        added = 0
        for delivery in deliveries:
            if delivery.offset < 0:
                continue
            key = (delivery.topic_index, delivery.partition)
            previous = last.get(key)
            if previous is not None and delivery.offset <= previous:
                # The log was replaced (read again from its beginning): older entries mean nothing.
                self.clear()
                entries, last = self._entries, self._last
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
            entries.append(tuple(delivery))
            added += len(delivery.text)
        self._bytes += added
        if self._incomplete and entries:
            self._complete_base(Delivery._make(entries[-1]))
        self._trim()

    def _complete_base(self, newest: Delivery) -> None:
        """Fill in partitions the base did not know yet (reading had not started on them when the
        window began): from the first of their records held, else from where the newest cursor
        says reading them starts."""
        base = self._base
        cursor = frame_cursor(newest.text)
        if base is None or cursor is None:
            return
        _, vector = cursors.decode(cursor)
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
            old = Delivery._make(entries.popleft())
            self._bytes -= len(old.text)
            assert base is not None
            offsets = base[old.topic_index]
            if old.partition >= len(offsets):
                offsets.extend([cursors.UNKNOWN] * (old.partition + 1 - len(offsets)))
            offsets[old.partition] = max(offsets[old.partition], old.offset + 1)

    def clear(self) -> None:
        self._entries.clear()
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
        for entry in self._entries:
            delivery = Delivery._make(entry)
            offsets = vector[delivery.topic_index] if delivery.topic_index < len(vector) else ()
            start = offsets[delivery.partition] if delivery.partition < len(offsets) else 0
            if delivery.offset >= start:
                yield delivery
