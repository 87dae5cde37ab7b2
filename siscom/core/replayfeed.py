"""A resuming client's replay: what it asked for, built only as fast as it takes it.

A replay can be hundreds of thousands of records. Building all of its frames at once would stall
every other client for as long and hold them all until this client has read them; a hundred
clients resuming together would each hold their own copy. So a replay is a chain of generators
that the client's stream pulls from in bounded slices, as it writes:

- :class:`SharedLog`: one partition's records from one log read, shared by every replay of that
  read, each record decoded at most once, by whichever replay reaches it first;
- :func:`log_entries`: a client's records of several partitions, through its device filter,
  merged by time (each partition in log order);
- :func:`cursored`: each delivery given the cursor where this client stands just after it (its
  own vector, advanced record by record; the frame is built once for it, with that cursor);
- :class:`ReplayFeed`: what the stream pulls from, a slice at a time.

Every generator yields ``None`` for each record it passed over, so that a slice is bounded by the
records examined, not only by the frames found: a client of one device among thousands scans its
replay a bounded step at a time, yielding to the live stream between steps.
"""

from __future__ import annotations

import heapq
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

from siscom.core.cursors import LogPositions, Vector
from siscom.core.deliveries import Delivery, record_delivery
from siscom.core.geo import Position
from siscom.core.protocol import with_cursor
from siscom.core.records import Decoded, MalformedRecord, decode_value

#: What a replay's generators yield: a delivery, or None for a record passed over.
Step = Delivery | None


def raw_record(offset: int, timestamp: int, value: bytes | None) -> tuple[int, int, bytes | None]:
    """What a replay needs of a Kafka record, as a plain tuple: about a hundred bytes less to hold
    than the record the client library made, and, holding only numbers and bytes, untracked by
    the cyclic garbage collector (a read holds hundreds of thousands of them: tracked, each full
    collection would walk them all and stop the event loop meanwhile; see core/window.py)."""
    return (offset, timestamp, value)


class SharedLog:
    """One partition's records in log order, from one read, decoded on demand and once.

    Records are raw (:func:`raw_record` tuples) until the first replay that needs one decodes it,
    for every replay sharing the read; the raw record is then let go (its decoded form, a plain
    tuple too, is what replays use).
    """

    __slots__ = ("_records", "_decoded", "offsets", "_max_bytes", "_readers", "_tokens", "_freed")

    def __init__(self, records: list[Any], max_bytes: int) -> None:
        self._records: list[Any] = records
        #: Per record decoded so far: (offset, timestamp, device id, text, position) or None when
        #: malformed.
        self._decoded: list[tuple[int, int, str, str, Position | None] | None] = []
        #: The records' offsets, ascending (where each replay's range starts and ends).
        self.offsets = array("q", [record[0] for record in records])
        self._max_bytes = max_bytes
        #: Where each replay reading this log stands (the index of its next record): what every
        #: one of them has passed is let go, a little at a time as they go, not all at the end.
        self._readers: dict[int, int] = {}
        self._tokens = 0
        #: Records before this index have been let go.
        self._freed = 0

    def join(self, start: int) -> int:
        """A replay will read from ``start`` on: its token for :meth:`reached` and :meth:`leave`."""
        self._tokens += 1
        self._readers[self._tokens] = start
        return self._tokens

    def reached(self, token: int, index: int) -> None:
        """The replay ``token`` will read nothing before ``index`` any more."""
        self._readers[token] = index
        self._let_go()

    def leave(self, token: int) -> None:
        """The replay ``token`` is over (or given up)."""
        if self._readers.pop(token, None) is not None:
            self._let_go()

    def _let_go(self) -> None:
        low = min(self._readers.values(), default=len(self.offsets))
        decoded, records = self._decoded, self._records
        for index in range(self._freed, min(low, len(decoded))):
            decoded[index] = None
        for index in range(max(self._freed, len(decoded)), low):
            records[index] = None
        self._freed = max(self._freed, low)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def decoded(self) -> int:
        """How many records have been decoded (by every replay of this read together)."""
        return len(self._decoded)

    def entry(self, index: int) -> tuple[int, int, str, str, Position | None] | None:
        """Record ``index`` decoded: its offset, timestamp, device id, value text and position
        (None: malformed, skipped)."""
        decoded = self._decoded
        while len(decoded) <= index:
            number = len(decoded)
            record = self._records[number]
            if record is None:  # let go: no replay reads it
                decoded.append(None)
                continue
            offset, timestamp, raw = record
            self._records[number] = None
            try:
                value = decode_value(raw, max_bytes=self._max_bytes)
            except MalformedRecord:
                decoded.append(None)  # the live decoder counted and logged it when it routed it
                continue
            decoded.append((offset, timestamp, value.device_id, value.text, value.position))
        return decoded[index]


class LogSpan:
    """Records ``[start, end)`` of a :class:`SharedLog` (as indices into it), for one replay: the
    log keeps them until that replay has passed them, or this span is gone unread."""

    __slots__ = ("log", "start", "end", "token", "__weakref__")

    def __init__(self, log: SharedLog, start: int, end: int) -> None:
        self.log = log
        self.start = start
        self.end = end
        self.token = log.join(start)
        weakref.finalize(self, log.leave, self.token)

    def __len__(self) -> int:
        return self.end - self.start

    def offsets(self) -> list[int]:
        return list(self.log.offsets[self.start : self.end])


class LogRecord(NamedTuple):
    """A record of a replay from the log, decoded, not yet framed (its frame carries the cursor of
    the one client it is for: see :func:`cursored`)."""

    topic_index: int
    partition: int
    offset: int
    timestamp_ms: int
    alert: bool
    value: Decoded


T = TypeVar("T", LogRecord, Delivery)


def framed(record: LogRecord, cursor: str) -> Delivery:
    """``record``'s delivery with ``cursor``: the live decoder's own record-to-frame step."""
    return record_delivery(
        record.value,
        alert=record.alert,
        cursor=cursor,
        timestamp_ms=record.timestamp_ms,
        topic_index=record.topic_index,
        partition=record.partition,
        offset=record.offset,
    )


def recursored(delivery: Delivery, cursor: str) -> Delivery:
    """A routed delivery (from the recent-records window) with this client's cursor instead."""
    return delivery._replace(text=with_cursor(delivery.text, cursor))


def _span_entries(
    span: LogSpan, ids: frozenset[str] | None, alert: bool, topic_index: int, partition: int
) -> Iterator[LogRecord | None]:
    """One partition's records of ``ids`` (None: every device); None for each record passed over."""
    log, token = span.log, span.token
    try:
        yield from _entries_of(log, token, span.start, span.end, ids, alert, topic_index, partition)
    finally:
        log.leave(token)


#: A replay tells its log how far it got once per this many records.
_REACHED_EVERY = 256


def _entries_of(
    log: SharedLog,
    token: int,
    start: int,
    end: int,
    ids: frozenset[str] | None,
    alert: bool,
    topic_index: int,
    partition: int,
) -> Iterator[LogRecord | None]:
    for index in range(start, end):
        if not (index - start) % _REACHED_EVERY:
            log.reached(token, index)
        entry = log.entry(index)
        if entry is None:
            yield None
            continue
        offset, timestamp, device_id, text, position = entry
        if ids is not None and device_id not in ids:
            yield None
            continue
        yield LogRecord(topic_index, partition, offset, timestamp, alert, Decoded(device_id, text, position))


def log_entries(
    spans: Iterable[tuple[LogSpan, int, int, bool]], ids: frozenset[str] | None
) -> Iterator[LogRecord | None]:
    """The records of ``ids`` in ``spans`` (each a span with its topic index, partition and
    whether its topic is the alerts topic), partitions interleaved by time, each in log order
    (a stable merge); None for each record passed over."""
    sources = [_span_entries(span, ids, alert, topic, partition) for span, topic, partition, alert in spans]
    heads: list[tuple[int, int, LogRecord]] = []

    def advance(number: int) -> Iterator[None]:
        for step in sources[number]:
            if step is None:
                yield None
                continue
            heapq.heappush(heads, (step.timestamp_ms, number, step))
            return

    for number in range(len(sources)):
        yield from advance(number)
    while heads:
        _, number, delivery = heapq.heappop(heads)
        yield delivery
        yield from advance(number)


def cursored(
    steps: Iterable[T | None],
    positions: LogPositions,
    frame: Callable[[T, str], Delivery],
) -> Iterator[Step]:
    """Each delivery of ``steps`` framed by ``frame`` with the cursor where this client stands just
    after it: ``positions`` (set to the client's vector) advanced past it."""
    for step in steps:
        if step is None:
            yield None
            continue
        topic, partition = step.topic_index, step.partition
        if not positions.known(topic, partition):
            # Partitions the client's cursor does not name count from offset 0 (as it resumed).
            for earlier in range(partition):
                if not positions.known(topic, earlier):
                    positions.advance(topic, earlier, 0)
        positions.advance(topic, partition, step.offset + 1)
        yield frame(step, positions.cursor())


def positions_at(topics: tuple[str, ...], vector: Vector) -> LogPositions:
    """Cursor positions standing at ``vector`` (a client's cursor)."""
    positions = LogPositions(topics)
    for topic, offsets in enumerate(vector):
        for partition, offset in enumerate(offsets):
            positions.advance(topic, partition, offset)
    return positions


#: A slice's clock is read once per this many records looked at.
_CLOCK_EVERY = 32


class ReplayFeed:
    """What a resumed stream replays, pulled a slice at a time (see the module docstring)."""

    __slots__ = ("_steps", "_clock", "finished", "pulled")

    def __init__(self, steps: Iterable[Step], clock: Callable[[], float] | None = None) -> None:
        """``clock`` (seconds, any monotonic one) bounds a slice by time too: decoding costs more on
        a loaded machine, and a slice must stay short whatever the machine."""
        self._steps = iter(steps)
        self._clock = clock
        #: True once every delivery has been pulled.
        self.finished = False
        #: Deliveries pulled so far.
        self.pulled = 0

    @classmethod
    def of(cls, deliveries: Iterable[Delivery]) -> ReplayFeed:
        """A replay of deliveries already framed for this client."""
        return cls(deliveries)

    def pull(self, max_deliveries: int, max_steps: int, max_seconds: float = 0.0) -> list[Delivery]:
        """The next deliveries: at most ``max_deliveries``, examining at most ``max_steps`` records,
        for about ``max_seconds`` at most when the feed has a clock (0: no time bound)."""
        out: list[Delivery] = []
        if self.finished:
            return out
        clock = self._clock if max_seconds > 0 else None
        until = clock() + max_seconds if clock is not None else 0.0
        steps = 0
        for step in self._steps:
            if step is not None:
                out.append(step)
                if len(out) >= max_deliveries:
                    break
            steps += 1
            if steps >= max_steps or (clock is not None and not steps % _CLOCK_EVERY and clock() >= until):
                break
        else:
            self.finished = True
        self.pulled += len(out)
        return out

    def rest(self) -> list[Delivery]:
        """Every delivery not pulled yet, at once (for streams that need the whole replay)."""
        out = [step for step in self._steps if step is not None]
        self.finished = True
        self.pulled += len(out)
        return out

    def close(self) -> None:
        """Stop early (the stream ended): the generators let go of what they hold."""
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()
        self.finished = True
