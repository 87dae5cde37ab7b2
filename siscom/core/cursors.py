"""Cursors: how far a client's stream has got on every partition, as one short opaque string.

A cursor is a *vector* of Kafka offsets, one per partition of every topic the gateway reads: the
offset of the next record to deliver. Offsets mean the same on every replica reading the same
topics, so a cursor issued by one replica can be honoured by any other, with nothing stored.

Frames are built once and shared by every recipient, so a frame cannot carry a per-client cursor.
It does not need to: the cursor on a frame is the gateway's *dispatch* vector just after that
record: that record's partition at its offset plus one, every other partition where dispatching
had got to. Every client receives its frames in dispatch order, so a client that received the
frame has received every record of its devices dispatched before it, on every partition: the
dispatch vector is exactly that client's cursor too. The cost is per record (a vector of P
offsets encoded once), never per recipient; the price is size: every frame carries all P offsets.

Encoding (version 1), then URL-safe base64 without padding::

    version (1 byte) | CRC-32 of the topic names (4 bytes) |
    per topic: partition count (varint), then per partition the zigzag varint of
    (next offset + 1, 0 for unknown) minus the previous partition's value

Partitions of one topic advance together, so the deltas are small: at 48 partitions a cursor is
about 1-2 bytes a partition whatever the offsets' size.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Sequence

__all__ = ["MAX_CURSOR_CHARS", "CursorError", "Vector", "decode", "encode", "LogPositions", "offset_in", "topics_crc"]

VERSION = 1
#: Longest cursor text accepted (oversized ones are malformed): room for about 1,000 partitions.
MAX_CURSOR_CHARS = 4096
#: Offsets not known yet (a partition with no record read and no start offset).
UNKNOWN = -1

#: Per topic (in the gateway's topic order), the next offset to deliver of each partition.
Vector = tuple[tuple[int, ...], ...]


def offset_in(vector: Vector, topic: int, partition: int) -> int:
    """The offset ``vector`` names for ``partition`` of ``topic``; 0 for one it does not name (a
    client resumes such a partition from its start)."""
    offsets = vector[topic] if topic < len(vector) else ()
    return offsets[partition] if partition < len(offsets) else 0


class CursorError(ValueError):
    """Text that is not a cursor (garbage, truncated, oversized, another version)."""


def topics_crc(topics: Sequence[str]) -> int:
    return zlib.crc32("\n".join(topics).encode())


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def encode(crc: int, vector: Vector) -> str:
    out = bytearray((VERSION,))
    out += crc.to_bytes(4, "big")
    for offsets in vector:
        _varint(len(offsets), out)
        previous = 0
        for offset in offsets:
            value = offset + 1
            _varint(_zigzag(value - previous), out)
            previous = value
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode(text: str) -> tuple[int, Vector]:
    """The topics' CRC and the vector of a cursor; :class:`CursorError` if it is not one."""
    if not text or len(text) > MAX_CURSOR_CHARS:
        raise CursorError("cursor empty or too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("cursor is not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise CursorError("cursor is not canonical base64url")
    if len(raw) < 5 or raw[0] != VERSION:
        raise CursorError("unknown cursor version")
    crc = int.from_bytes(raw[1:5], "big")
    position = 5
    end = len(raw)

    def varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            if position >= end or shift > 63:
                raise CursorError("cursor truncated")
            byte = raw[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    topics: list[tuple[int, ...]] = []
    while position < end:
        count = varint()
        if count > MAX_CURSOR_CHARS:
            raise CursorError("cursor names too many partitions")
        offsets = []
        previous = 0
        for _ in range(count):
            value = previous + _unzigzag(varint())
            if value < 0:
                raise CursorError("cursor holds a negative offset")
            offsets.append(value - 1)
            previous = value
        topics.append(tuple(offsets))
    if not topics:
        raise CursorError("cursor truncated")
    return crc, tuple(topics)


def _delta(value: int, previous: int) -> bytes:
    out = bytearray()
    _varint(_zigzag(value - previous), out)
    return bytes(out)


class LogPositions:
    """The dispatch vector, advanced record by record, and its cursor text, built once per record.

    Owned by the gateway (it outlives the decoder). Each partition's encoded bytes are kept, so a
    record costs re-encoding two of them (its own delta and the next one's) and one join.
    """

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        self.crc = topics_crc(self.topics)
        self._offsets: list[list[int]] = [[] for _ in self.topics]
        #: Per topic: its partition count's varint, then each partition's delta bytes.
        self._chunks: list[list[bytes]] = [[b"\x00"] for _ in self.topics]
        self._head = bytes((VERSION,)) + self.crc.to_bytes(4, "big")
        self._index = {topic: number for number, topic in enumerate(self.topics)}
        self._text: str | None = None

    def topic_index(self, topic: str) -> int:
        return self._index[topic]

    def known(self, topic_index: int, partition: int) -> bool:
        offsets = self._offsets[topic_index]
        return partition < len(offsets) and offsets[partition] != UNKNOWN

    def advance(self, topic_index: int, partition: int, next_offset: int) -> None:
        offsets = self._offsets[topic_index]
        chunks = self._chunks[topic_index]
        if partition >= len(offsets):
            offsets.extend([UNKNOWN] * (partition + 1 - len(offsets)))
            count = bytearray()
            _varint(len(offsets), count)
            chunks[0] = bytes(count)
            del chunks[1:]
            previous = 0
            for offset in offsets:
                chunks.append(_delta(offset + 1, previous))
                previous = offset + 1
        offsets[partition] = next_offset
        previous = offsets[partition - 1] + 1 if partition else 0
        chunks[partition + 1] = _delta(next_offset + 1, previous)
        if partition + 1 < len(offsets):
            chunks[partition + 2] = _delta(offsets[partition + 1] + 1, next_offset + 1)
        self._text = None

    def vector(self) -> Vector:
        return tuple(tuple(offsets) for offsets in self._offsets)

    def cursor(self) -> str:
        """The cursor of the vector as it stands (cached until the next advance)."""
        text = self._text
        if text is None:
            raw = self._head + b"".join(b"".join(chunks) for chunks in self._chunks)
            text = self._text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        return text
