"""The client side of Server-Sent Events over HTTP/1.1, sans I/O: the request, the response head,
chunked transfer coding and the ``text/event-stream`` format.

For clients that must be cheaper or ruder than a browser: load clients, and tests that read the
wire byte for byte, stop reading, or drop the connection. They do their own I/O around it.
Only what this service sends is decoded: a head, then a chunked body (or one of
``Content-Length`` bytes); events parsed as the HTML standard says (lines end with CR, LF or
CRLF; ``data``, ``id``, ``retry``; comments and unknown fields ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["BodyDecoder", "Event", "EventParser", "Head", "MAX_HEAD", "request", "take_head"]

#: Longest response head accepted.
MAX_HEAD = 16384


def request(target: str, host: str, headers: Mapping[str, str] | None = None, *, method: str = "GET") -> bytes:
    """A request for ``target`` (path and query) asking for an event stream, unless ``headers``
    say otherwise (``Accept``)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    merged = {"Accept": "text/event-stream", **(headers or {})}
    lines += [f"{name}: {value}" for name, value in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    #: Header names in lower case; a repeated header's values joined with ", ".
    headers: dict[str, str]
    raw: bytes

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


def take_head(buffer: bytearray) -> Head | None:
    """The response head at the start of ``buffer`` (removed from it), or None until it is whole."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("response head too long")
        return None
    raw = bytes(buffer[: end + 4])
    del buffer[: end + 4]
    status_line, *lines = raw[:end].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return Head(int(status_line.split(" ", 2)[1]), headers, raw)


class BodyDecoder:
    """The body's bytes out of its transfer coding: chunked, or ``length`` bytes."""

    __slots__ = ("_chunked", "_left", "_buffer", "done", "chunks")

    def __init__(self, head: Head) -> None:
        self._chunked = head.chunked
        self._left = -1 if self._chunked else int(head.headers.get("content-length", "0"))
        self._buffer = bytearray()
        #: The body is complete (the last chunk, or every byte of its length).
        self.done = not self._chunked and self._left == 0
        #: The sizes of the chunks read so far (each one write of the server, as a rule).
        self.chunks: list[int] = []

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes (possibly none yet)."""
        if not self._chunked:
            data = data[: self._left]
            self._left -= len(data)
            self.done = self._left == 0
            return data
        buffer = self._buffer
        buffer += data
        out = bytearray()
        while not self.done:
            if self._left < 0:  # at a chunk's size line
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                size = int(buffer[:end].split(b";")[0], 16)
                del buffer[: end + 2]
                self._left = size
                if size == 0:
                    self.done = True
                    break
            if len(buffer) < self._left + 2:
                break
            out += buffer[: self._left]
            self.chunks.append(self._left)
            del buffer[: self._left + 2]  # the chunk and its CRLF
            self._left = -1
        return bytes(out)


@dataclass(slots=True)
class Event:
    """One dispatched event; ``raw``: the bytes of its block, blank line included."""

    data: str
    id: str | None = None
    raw: bytes = b""
    fields: list[tuple[str, str]] = field(default_factory=list)


_LINE = re.compile(rb"\r\n|\r|\n")


class EventParser:
    """Events out of a ``text/event-stream`` body, as a browser's ``EventSource`` reads them."""

    __slots__ = ("_buffer", "_block", "_raw", "retry", "last_event_id", "blocks")

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: The lines of the block being read, and its bytes so far.
        self._block: list[str] = []
        self._raw = bytearray()
        #: The last ``retry`` field seen (milliseconds), if any.
        self.retry: int | None = None
        #: What ``EventSource`` would send as ``Last-Event-ID`` now.
        self.last_event_id = ""
        #: Every block read so far that dispatched no event (e.g. the ``retry`` field alone).
        self.blocks: list[bytes] = []

    def feed(self, data: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += data
        events = []
        start = 0
        while (match := _LINE.search(buffer, start)) is not None:
            if match.group() == b"\r" and match.end() == len(buffer):
                break  # a CR at the end may be the start of a CRLF
            self._raw += buffer[start : match.end()]
            line = bytes(buffer[start : match.start()]).decode("utf-8")
            start = match.end()
            if line:
                self._block.append(line)
                continue
            raw, lines = bytes(self._raw), self._block
            self._raw, self._block = bytearray(), []
            event = self._dispatch(lines, raw)
            if event is None:
                self.blocks.append(raw)
            else:
                events.append(event)
        del buffer[:start]
        return events

    def _dispatch(self, lines: list[str], raw: bytes) -> Event | None:
        data: list[str] = []
        fields = []
        event_id = None
        for text in lines:
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields.append((name, value))
            if name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                event_id = value
                self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        if not data:
            return None
        return Event("\n".join(data), event_id, raw, fields)
