"""What the app can learn about, and do to, the TCP connection Hypercorn serves a websocket on.

ASGI gives an application no way to drop a connection, and Hypercorn 0.18 does not tell it of
every end of one:

- Bytes that arrive after a WebSocket upgrade request but before the app's accept (a body, a
  pipelined frame, a single NUL byte) make Hypercorn answer 400 and mark its stream closed
  (``ws_stream.py``: ``WSStream.handle``, ``Body``/``Data`` while ``not handshake.accepted``).
  From then on it ignores whatever the app sends (``app_send`` returns at once while ``closed``)
  and never sends it ``websocket.disconnect``, even when the client goes (``handle`` returns at
  once while ``closed``); nor does it close the TCP connection, which stays open for as long as
  the client keeps it. The only trace the app can see is the stream's ``closed`` flag.
- A client that stops reading keeps its connection open for as long as it likes: Hypercorn
  closes a socket gracefully (``tcp_server.py``: ``write_eof``, ``close``, ``wait_closed``),
  which waits for every buffered byte to be written first.

:class:`HypercornConnection` reaches the stream and the connection's asyncio writer from the ASGI
``send`` callable the app was given (``WSStream.app_send``, whose stream sends through
``H11Protocol.stream_send``, which writes through ``TCPServer.protocol_send``).
``tests/contracts/test_hypercorn_contract.py`` fails, naming the version, when that chain or the
behaviour above changes. Over HTTP/2, or under another server, there is no link (``None``): a
connection shared by several streams is never dropped for one of them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

logger = logging.getLogger(__name__)

#: SO_LINGER on, zero seconds: close() resets the connection and frees its kernel buffers at once.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class HypercornConnection:
    """The Hypercorn stream and TCP connection behind one websocket, or one HTTP response that
    streams (Server-Sent Events: the same chain, with ``HTTPStream.app_send``)."""

    __slots__ = ("_stream", "_writer")

    def __init__(self, stream: Any, writer: asyncio.StreamWriter) -> None:
        self._stream = stream
        self._writer = writer

    @classmethod
    def of(cls, asgi_send: Any) -> HypercornConnection | None:
        """The connection behind the ASGI ``send`` Hypercorn gave the app, or None if there is
        none to be had (another server, HTTP/2, another Hypercorn)."""
        try:
            from hypercorn.asyncio.tcp_server import TCPServer
            from hypercorn.protocol.h11 import H11Protocol
            from hypercorn.protocol.http_stream import HTTPStream
            from hypercorn.protocol.ws_stream import WSStream
        except ImportError:
            return None
        stream = getattr(asgi_send, "__self__", None)
        if not isinstance(stream, WSStream | HTTPStream):
            return None
        protocol = getattr(getattr(stream, "send", None), "__self__", None)
        if not isinstance(protocol, H11Protocol):
            return None
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        writer = getattr(server, "writer", None)
        if not isinstance(server, TCPServer) or not isinstance(writer, asyncio.StreamWriter):
            return None
        return cls(stream, writer)

    @property
    def stream(self) -> Any:
        """Hypercorn's ``WSStream`` of this websocket (see siscom/web/server/coalesce.py), or its
        ``HTTPStream`` of an HTTP response."""
        return self._stream

    @property
    def h11(self) -> Any:
        """The h11 connection the stream's ``H11Protocol`` writes through (see
        :class:`~siscom.web.server.sse_transport.ChunkWriter`); the chain :meth:`of` checked."""
        return self._stream.send.__self__.connection

    @property
    def transport(self) -> asyncio.WriteTransport | None:
        """The connection's asyncio transport (see siscom/web/server/coalesce.py)."""
        return self._writer.transport  # type: ignore[return-value]

    @property
    def abandoned(self) -> bool:
        """True when Hypercorn has given up the websocket without telling the app (it answered
        400 to bytes sent before the accept): nothing the app sends arrives, no disconnect comes."""
        return bool(self._stream.closed)

    async def server_stopping(self) -> None:
        """Return when the server stops taking connections and starts waiting for the open ones
        to end (Hypercorn's worker context, shared by every connection of the process, is
        ``terminated``: ``asyncio/run.py`` sets it first thing on shutdown)."""
        await self._stream.context.terminated.wait()

    def pause_reading(self) -> None:
        """Stop reading from the client (a connection whose client is past its allowance: what it
        still sends stays in the kernel, and its window closes)."""
        transport = self._writer.transport
        if isinstance(transport, asyncio.ReadTransport) and transport.is_reading():
            transport.pause_reading()

    def close(self) -> None:
        """Close the connection once what is buffered is written (the 400 Hypercorn answered)."""
        self._writer.close()

    def abort(self) -> None:
        """Drop the connection now, with a reset: nothing more waits in any buffer for it."""
        transport = self._writer.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            except OSError:
                pass  # already closed
        transport.abort()
