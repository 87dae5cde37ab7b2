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
import functools
import logging
import socket
import struct
from typing import Any, cast

from siscom.web.server.inbox import Inbox

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
        # A stream's transport reads as well as writes (the writer's type names only the writing).
        transport = cast(asyncio.Transport, self._writer.transport)
        if transport.is_reading():
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


def refuse_non_ascii_handshakes() -> None:
    """Make Hypercorn answer 400 to a WebSocket handshake whose ``Sec-WebSocket-Protocol``,
    ``Sec-WebSocket-Extensions`` or ``Connection`` header holds a byte past ASCII.

    Hypercorn 0.18 splits those headers with wsproto's ``split_comma_header``, which decodes
    them as ASCII (``ws_stream.py``: ``Handshake.__init__``): any other byte raises
    ``UnicodeDecodeError`` out of the connection's task, which drops the connection unanswered
    and logs a traceback per request. A handshake that cannot be read is an invalid one, answered
    as Hypercorn answers those (``is_valid`` false: 400). Applied once per process; a no-op
    under another server.
    """
    try:
        from hypercorn.protocol.ws_stream import Handshake
    except ImportError:
        return
    original = Handshake.__init__
    if getattr(original, "_siscom_ascii_only", False):
        return

    def init(self: Any, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
        try:
            original(self, headers, http_version)
        except UnicodeDecodeError:
            original(self, [(name, value) for name, value in headers if value.isascii()], http_version)
            self.version = None  # what is_valid() refuses

    init._siscom_ascii_only = True  # type: ignore[attr-defined]
    Handshake.__init__ = init  # type: ignore[method-assign]


def lighter_app_queues() -> None:
    """Give every stream Hypercorn serves an :class:`~siscom.web.server.inbox.Inbox` where it
    would make an ``asyncio.Queue``: the queue between the connection's reading and the app's
    ``receive``, the same size (``max_app_queue_size``), put and got the same way, about 3 KB
    lighter per connection (see siscom/web/server/inbox.py).

    Hypercorn 0.18 makes that queue in ``TaskGroup.spawn_app`` (``asyncio/task_group.py``) and
    uses nothing of it but ``put`` (returned, for the stream) and ``get`` (the app's
    ``receive``); the method is replaced by one that does the same with the lighter queue.
    Applied once per process; a no-op under another server.
    """
    try:
        from hypercorn.asyncio import task_group
    except ImportError:
        return
    group = task_group.TaskGroup
    if getattr(group.spawn_app, "_siscom_inbox", False):
        return

    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        queue = Inbox(config.max_app_queue_size)
        loop = self._loop

        def call_soon(func: Any, *args: Any) -> Any:  # what a sync app's thread runs on the loop
            return asyncio.run_coroutine_threadsafe(func(*args), loop).result()

        run_in_executor = functools.partial(loop.run_in_executor, None)
        self.spawn(task_group._handle, app, config, scope, queue.get, send, run_in_executor, call_soon)
        return queue.put

    spawn_app._siscom_inbox = True  # type: ignore[attr-defined]
    group.spawn_app = spawn_app  # type: ignore[method-assign]


class PipelineGuard(asyncio.Protocol):
    """Keeps Hypercorn reading a connection whose HTTP response is an event stream, so that it
    sees the client leave, whatever the client sent after its request.

    Bytes after a request make Hypercorn stop reading the connection until the response ends
    (``h11.py``: ``next_event`` is ``h11.PAUSED`` -> ``can_read.wait()``): a client that
    pipelined a request (or sent anything) and then closed or reset its side went unseen, and its
    stream, session and connection slot stayed until a keep-alive write failed, one to three
    keep-alive intervals later; Hypercorn's task of the connection then waited forever.

    Installed in front of the asyncio transport's protocol (``transport.set_protocol``), this
    drops whatever the client sends once its request is read, while the stream lasts (an event
    stream takes nothing from the client: a pipelined request behind it is ignored), and discards
    what Hypercorn already holds behind the request, letting it read on. Hypercorn then sees the
    FIN or reset itself and ends the response as for any client that leaves.
    """

    def __init__(self, inner: asyncio.BaseProtocol, h11_connection: Any) -> None:
        self._inner = inner
        self._h11 = h11_connection
        self._active = True
        import h11

        #: h11's state of a peer whose request has been read whole.
        self._done = h11.DONE
        #: Bytes dropped: what the client sent behind its request.
        self.dropped = 0

    @classmethod
    def install(cls, connection: HypercornConnection) -> PipelineGuard | None:
        """Guard ``connection`` (an HTTP response's, its head sent); None when it cannot be."""
        import h11

        protocol = getattr(getattr(connection.stream, "send", None), "__self__", None)
        h11_connection = getattr(protocol, "connection", None)
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        reader = getattr(server, "reader", None)
        transport = connection.transport
        if (
            transport is None
            or protocol is None
            or transport.is_closing()
            or not isinstance(h11_connection, h11.Connection)
            or not isinstance(reader, asyncio.StreamReader)
            or not hasattr(protocol, "can_read")
        ):
            return None
        guard = cls(transport.get_protocol(), h11_connection)
        transport.set_protocol(guard)
        behind = h11_connection.trailing_data[0]
        if behind and h11_connection.their_state is h11.DONE:
            # Hypercorn has stopped reading: forget what came behind the request (h11 0.16 keeps
            # it in Connection._receive_buffer; the asyncio reader may hold more) and wake it.
            guard.dropped = len(behind) + len(reader._buffer)  # type: ignore[attr-defined]
            h11_connection._receive_buffer = type(h11_connection._receive_buffer)()
            reader._buffer.clear()  # type: ignore[attr-defined]
            asyncio.ensure_future(protocol.can_read.set())
        return guard

    def stop(self) -> None:
        """The response is over: pass everything on, as if this protocol were not there."""
        self._active = False

    # asyncio.Protocol, passed on

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._active and self._h11.their_state is self._done:
            self.dropped += len(data)
            return
        self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
