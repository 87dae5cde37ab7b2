"""The stream as Server-Sent Events: each WebSocket frame's text as one event, without I/O.

An event is the frame's text on a ``data:`` line, preceded by ``id: <cursor>`` when the frame has
one (``message``, ``alert`` and ``ping`` frames), and ended by a blank line; no ``event:`` field,
so ``EventSource.onmessage`` gets every frame and ``JSON.parse(event.data)`` gives the object a
WebSocket client gets. The browser keeps the last ``id`` it saw and sends it back as
``Last-Event-ID`` when it reconnects: the cursor, so the stream resumes as with ``?cursor=``.

Frame texts are one line, except when a Kafka value itself spans lines (JSON allows line breaks
between tokens): each line then gets its own ``data:`` line, which ``EventSource`` joins with
``\\n``. A line break in JSON can only be whitespace between tokens, so the parsed object is the
same.

:class:`EventCache` encodes each frame once however many SSE clients receive it: frame texts are
shared strings (one per record, see :mod:`siscom.core.deliveries`), and so are their events.
"""

from __future__ import annotations

import re

from siscom.core.encodings import DEFAULT_MAX_BYTES, EncodingCache
from siscom.core.protocol import frame_cursor

__all__ = ["CONTENT_TYPE", "EventCache", "accepts_event_stream", "encode_event", "retry_field"]

CONTENT_TYPE = "text/event-stream"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_QUALITY = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def encode_event(text: str) -> bytes:
    """One event carrying the frame ``text`` (its cursor, if any, as the event's id)."""
    cursor = frame_cursor(text)
    head = "data: " if cursor is None else "id: " + cursor + "\ndata: "
    if "\n" in text or "\r" in text:
        text = "\ndata: ".join(_LINE_BREAK.split(text))
    return (head + text + "\n\n").encode()


def retry_field(milliseconds: int) -> bytes:
    """The block that sets the browser's reconnect delay (it dispatches no event)."""
    return b"retry: %d\n\n" % milliseconds


def accepts_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for an event stream (``text/event-stream`` with q > 0).

    Wildcards do not count: a client that takes anything did not ask for a stream, and gets the
    explanation of how to open one instead.
    """
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = item.split(";")
        if media.strip().lower() != CONTENT_TYPE:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                # A quality value is "0" to "1" with up to three ASCII decimals (RFC 9110, 12.4.2).
                value = value.strip()
                quality = float(value) if _QUALITY.fullmatch(value) else 0.0
        if quality > 0:
            return True
    return False


class EventCache(EncodingCache):
    """The events of recent frames, so that every SSE client receiving a frame shares one encoding
    (see :class:`~siscom.core.encodings.EncodingCache`)."""

    __slots__ = ()

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(encode_event, max_bytes)

    #: The event of a text; the events of several, as one piece.
    event = EncodingCache.encoded
    events = EncodingCache.joined
