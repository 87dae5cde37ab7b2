"""What the benchmark's SSE load clients read of a stream, sans I/O: each event's data, cheaply.

The HTTP side (request, response head, chunked body) is :mod:`bench.eventstream`'s. Its
event parser reads events as a browser does (every line ending, every field, multi-line data);
a load client needs less: the server writes each event's data as one line (a frame's JSON text)
so :class:`DataLines` hands over each ``data:`` line as soon as it is complete, without waiting
for the blank line that ends the event, and skips ``id:``, ``retry:`` and comments. An event whose
data spans several lines (a Kafka value with line breaks) would come out as several payloads:
the benchmark's producer writes none.
"""

from __future__ import annotations

from bench.eventstream import BodyDecoder, take_head

__all__ = ["DataLines", "EventStreamDecoder", "StreamRefused"]


class StreamRefused(ConnectionError):
    """The server did not answer with an event stream (or broke the HTTP framing)."""


class DataLines:
    """Event-stream text in, as it arrives; the payload of each complete ``data:`` line out."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""  # the start of a line not yet complete

    def feed(self, text: bytes) -> list[bytes]:
        end = text.rfind(b"\n")
        if end < 0:
            self._pending += text
            return []
        complete = self._pending + text[:end] if self._pending else text[:end]
        self._pending = text[end + 1 :]
        payloads = []
        for line in complete.split(b"\n"):
            if line.startswith(b"data:"):
                if line.endswith(b"\r"):
                    line = line[:-1]
                payloads.append(line[6:] if line[5:6] == b" " else line[5:])
        return payloads


class EventStreamDecoder:
    """The bytes of one response in, as they arrive; the data of its events out."""

    __slots__ = ("_head", "_body", "_lines", "opened")

    def __init__(self) -> None:
        self._head = bytearray()
        self._body: BodyDecoder | None = None
        self._lines = DataLines()
        #: True once the head said 200 and ``text/event-stream``.
        self.opened = False

    @property
    def ended(self) -> bool:
        """True once the server ended the body (the last chunk)."""
        return self._body is not None and self._body.done

    def feed(self, data: bytes) -> list[bytes]:
        """Take ``data``; return the payload of each ``data:`` line it completed, in order.

        Raises :class:`StreamRefused` for any answer but a 200 event stream, or broken framing.
        """
        try:
            if self._body is None:
                self._head += data
                head = take_head(self._head)
                if head is None:
                    return []
                if head.status != 200 or not head.headers.get("content-type", "").startswith("text/event-stream"):
                    raise StreamRefused(head.raw.split(b"\r\n", 1)[0].decode("latin-1"))
                self._body = BodyDecoder(head)
                self.opened = True
                data, self._head = bytes(self._head), bytearray()
            return self._lines.feed(self._body.feed(data))
        except ValueError as broken:  # a head too long, a chunk size that is not hexadecimal
            raise StreamRefused(str(broken)) from None
