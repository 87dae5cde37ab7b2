"""Write coalescing ("corking"): every frame waiting for one client leaves in one write, from the
event-loop turn after it was routed, without waking the client's session task.

Why below ASGI: an ASGI ``websocket.send`` carries one message per awaited call, and under
Hypercorn 0.18 each call goes ``WSStream.app_send`` -> wsproto -> ``H11Protocol.stream_send`` ->
``TCPServer.protocol_send`` (a lock, ``StreamWriter.write``, ``drain``): one ``send()`` system
call per frame, from a task that has to be woken to make it. That path is most of the gateway's
CPU when many clients each get a few frames per batch. Nothing above ASGI can join frames into
one write or write without a task, so :class:`DirectWriter` frames the texts itself and hands
them to the connection's asyncio transport in one ``write``:

- only text data frames: control frames (pong, close) stay with Hypercorn, each one whole write,
  so frames never interleave; and only while the websocket is open (Hypercorn's stream
  ``CONNECTED`` and not ``closed``, wsproto ``OPEN``, the transport not closing);
- only while the transport takes bytes without waiting (its buffer at or below the high-water
  mark, the same test under which Hypercorn's ``drain`` returns at once); otherwise the session
  falls back to the ASGI path, which waits for the client under the send deadline;
- without compression the frame is built here (RFC 6455 section 5.2, unmasked, FIN set), once
  per frame for all its recipients (:func:`frame_cache`); with the gateway's permessage-deflate
  (siscom/web/server/deflate.py) it is compressed once per frame for all its recipients too;
  with Hypercorn's own it is built by the connection's wsproto object, whose compression context
  must see every data frame in order.

Nothing is buffered here: whatever is written is in the transport before the session can send
its close frame, so a close never overtakes (or loses) the frames before it.

``tests/contracts/test_coalesce_contract.py`` fails, naming the versions, when Hypercorn or wsproto
change what this relies on. ``STREAM_COALESCE_WRITES=false`` turns it off (every frame through
ASGI, as under any other server).
"""

from __future__ import annotations

import asyncio
from typing import Any

from siscom.core.encodings import EncodingCache
from siscom.web.server.deflate import SharedDeflate
from siscom.web.server.frames import data_frame
from siscom.web.server.link import HypercornConnection


def _framed(text: str) -> bytes:
    return data_frame(text.encode())


def frame_cache() -> EncodingCache:
    """The uncompressed text frames of recent frames, shared by the websockets of one app."""
    return EncodingCache(_framed)


class DirectWriter:
    """Writes text frames of one Hypercorn websocket straight to its transport."""

    __slots__ = ("_stream", "_connection", "_transport", "_high_water", "_open", "_frames")

    def __init__(self, stream: Any, transport: asyncio.WriteTransport, frames: EncodingCache) -> None:
        from wsproto.connection import ConnectionState

        self._stream = stream
        #: The websocket's wsproto connection, made at the accept (Hypercorn 0.18 ws_stream.py
        #: ``_accept``) and the same until the end.
        self._connection = stream.connection
        self._transport = transport
        self._high_water = transport.get_write_buffer_limits()[1]
        self._open = ConnectionState.OPEN
        # wsproto 1.3: Connection._proto is the FrameProtocol; its extensions were agreed in the
        # handshake (none, the gateway's permessage-deflate or Hypercorn's).
        extensions = self._connection._proto.extensions
        #: The frames of this websocket, shared with the app's others; None: wsproto frames them.
        self._frames: EncodingCache | None = frames
        if extensions:
            self._frames = extensions[0].frames if isinstance(extensions[0], SharedDeflate) else None

    @classmethod
    def of(cls, connection: HypercornConnection | None, frames: EncodingCache) -> DirectWriter | None:
        """A writer for an accepted websocket, or None when there is no link to write through."""
        if connection is None:
            return None
        stream, transport = connection.stream, connection.transport
        if getattr(stream, "connection", None) is None or transport is None:
            return None
        return cls(stream, transport, frames)

    def ready(self) -> bool:
        """True when frames written now go out without anyone waiting: the websocket is open and
        the transport's buffer is not above its high-water mark.

        Open: Hypercorn has not seen the connection end (``closed``), and neither side has sent a
        close frame (wsproto's state leaves ``OPEN`` on either; Hypercorn 0.18 ws_stream.py sends
        every close, the application's and the answer to the client's, through wsproto).
        """
        transport = self._transport
        return (
            not self._stream.closed
            and self._connection.state is self._open
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self._high_water
        )

    @property
    def shared(self) -> bool:
        """True when the frames written are the app's shared copies (uncompressed, or compressed
        by the gateway), False when this connection's wsproto object compresses them."""
        return self._frames is not None

    def write(self, texts: list[str]) -> None:
        """Frame ``texts`` and write them in one piece (call only when :meth:`ready`)."""
        frames = self._frames
        if frames is not None:
            data = frames.joined(texts)
        else:
            from wsproto.events import TextMessage

            send = self._connection.send
            data = b"".join([send(TextMessage(data=text)) for text in texts])
        self._transport.write(data)
