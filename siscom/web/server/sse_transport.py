"""A streaming HTTP response adapted to what a session needs: the stream as Server-Sent Events.

The route writes the response itself, through the ASGI ``send`` Hypercorn gave the app, from its
own coroutine, as the WebSocket route does: it checks the request, sends the head, runs the
session and waits for it to end. A body generator handed to Quart would not do: Quart sends a
returned response under ``asyncio.wait_for(..., RESPONSE_TIMEOUT)`` (quart 0.22 ``asgi.py``,
``ASGIHTTPConnection.handle_request``; 60 s by default), which would cut every stream after a
minute, and a disconnect landing before Quart first iterates the generator would leave its
session running. :class:`StreamHTTPConnection` gives the request that ``send`` and keeps Quart from
answering again once the route has.

How the end of a stream reaches the session:

- the client leaves: Hypercorn sees the connection end (``tcp_server.py``: ``_read_data`` at EOF,
  or a write failing, -> ``Closed`` -> ``HTTPStream`` ``StreamClosed`` -> ``http.disconnect``) and
  Quart cancels the route (``ASGIHTTPConnection.__call__``: the receiver returns on
  ``http.disconnect``, the handler is cancelled), which ends the session;
- the session ends (shutdown, slow client, expired token): :meth:`SseTransport.close` ends the
  body; an error event saying why goes out first (``in_band_close``), except for a shutdown, whose
  clean end makes ``EventSource`` reconnect by itself (to another replica, with ``Last-Event-ID``).

A client that sends bytes after its request (a pipelined request) makes Hypercorn stop reading
its connection (``h11.py``: ``h11.PAUSED`` -> ``can_read.wait()``) until the response ends; its
leaving is then seen when writing to it fails (a frame or keep-alive after it left draws the
reset; the next write fails).

Hypercorn applies no timeout to a response in progress: ``read_timeout`` is None unless set, and
the keep-alive timer runs only between requests (``h11.py``: ``Updated(idle=False)`` on a request).
"""

from __future__ import annotations

import asyncio
from typing import Any

from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request

from siscom.core.sse import EventCache, retry_field
from siscom.sessions.transport import ClientGone, Transport
from siscom.web.server.link import HypercornConnection

__all__ = ["ChunkWriter", "SseTransport", "StreamHTTPConnection"]


class SseTransport(Transport):
    """A :class:`~siscom.sessions.transport.Transport` over one streaming HTTP response.

    Frames become events through the shared :class:`~siscom.core.sse.EventCache`; the frames of
    one write leave in one chunk: straight to the socket while it takes them (``direct``, a
    :class:`ChunkWriter`), else in one ASGI body message (``send_many``). Nothing comes from the
    client: :meth:`receive` waits until it leaves.
    """

    __slots__ = ("peer", "direct", "in_band_close", "_send", "_events", "_connection", "_left", "_closing", "_ended")

    def __init__(self, asgi_send: Any, peer: str, connection: HypercornConnection | None, events: EventCache) -> None:
        self.peer = peer
        #: Writes below ASGI, once the head is out (see :meth:`open`).
        self.direct: ChunkWriter | None = None
        #: No close frame carries a reason: the session sends it as an error event first.
        self.in_band_close = True
        self._send = asgi_send
        self._events = events
        self._connection = connection
        self._left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        #: The end of the body has been handed to the socket.
        self._ended = False

    async def open(self, headers: list[tuple[bytes, bytes]], retry_milliseconds: int, *, coalesce: bool = True) -> None:
        """Send the head (200 and ``headers``) and the ``retry:`` field, before any frame; then
        (``coalesce``) write frames below ASGI when the connection allows (:class:`ChunkWriter`)."""
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._body(retry_field(retry_milliseconds))
        if coalesce:
            self.direct = ChunkWriter.of(self._connection, self._events)

    async def send(self, text: str) -> None:
        await self._body(self._events.event(text))

    async def send_many(self, texts: list[str]) -> None:
        await self._body(self._events.events(texts))

    async def _body(self, data: bytes) -> None:
        if self._left.done() or self._closing:
            raise ClientGone()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def receive(self) -> str | bytes:
        """Wait until the client leaves (it sends nothing over an event stream)."""
        await asyncio.shield(self._left)
        raise ClientGone()

    def client_left(self) -> None:
        """The route saw the client go: :meth:`receive` ends, nothing more is written."""
        if not self._left.done():
            self._left.set_result(None)

    async def close(self, code: int, reason: str) -> None:
        """End the body (the code and reason have no place on the wire; see ``in_band_close``)."""
        if self._closing or self._left.done():
            return
        self._closing = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        self._ended = True

    def abort(self) -> None:
        """Drop the connection, unless the body has ended (the connection may then carry the
        client's next request)."""
        if not self._ended and self._connection is not None:
            self._connection.abort()


class ChunkWriter:
    """Writes events straight to the connection's transport as chunks of the response, without
    waking the session's task (:class:`~siscom.sessions.transport.DirectWrites`), as
    siscom/web/server/coalesce.py does for websockets.

    Sound because h11 frames a chunked body without keeping count (h11 0.16 ``_writers.py``:
    ``ChunkedWriter.send_data`` writes ``%x CRLF data CRLF``, ``send_eom`` ``0 CRLF CRLF``), so
    chunks written here and those Hypercorn writes (``H11Protocol._send_h11_event``) interleave
    as whole chunks; and only while the response is in its body (Hypercorn's ``HTTPStream``
    ``RESPONSE``, h11 ``SEND_BODY`` with a chunked writer) and the transport takes bytes without
    waiting (at or below its high-water mark, when Hypercorn's ``drain`` returns at once).
    Otherwise the session writes through ASGI, under its send deadline.
    """

    __slots__ = ("_stream", "_h11", "_transport", "_high_water", "_events", "_response", "_send_body")

    def __init__(self, stream: Any, h11_connection: Any, transport: asyncio.WriteTransport, events: EventCache) -> None:
        import h11
        from hypercorn.protocol.http_stream import ASGIHTTPState

        self._stream = stream
        self._h11 = h11_connection
        self._transport = transport
        self._high_water = transport.get_write_buffer_limits()[1]
        self._events = events
        self._response = ASGIHTTPState.RESPONSE
        self._send_body = h11.SEND_BODY

    @classmethod
    def of(cls, connection: HypercornConnection | None, events: EventCache) -> ChunkWriter | None:
        """A writer for a response whose head has gone out chunked, or None (another server,
        HTTP/2, an HTTP/1.0 client, whose body is not chunked)."""
        if connection is None or connection.transport is None:
            return None
        from h11._writers import ChunkedWriter

        h11_connection = connection.h11
        if not isinstance(getattr(h11_connection, "_writer", None), ChunkedWriter):
            return None
        return cls(connection.stream, h11_connection, connection.transport, events)

    def ready(self) -> bool:
        stream, transport = self._stream, self._transport
        return (
            not stream.closed
            and stream.state is self._response
            and self._h11.our_state is self._send_body
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self._high_water
        )

    def write(self, texts: list[str]) -> None:
        data = self._events.events(texts)
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))


class StreamHTTPConnection(ASGIHTTPConnection):
    """Quart's ASGI HTTP handling, with the ASGI ``send`` on the request (``asgi_send``) for a
    route that writes its response itself, and nothing sent after such a route returns (the
    route sets ``streamed`` on the request once it has sent the head). It is the application's
    :attr:`quart.Quart.asgi_http_class`."""

    _request: Request | None = None

    def _create_request_from_scope(self, send: Any) -> Request:
        request = super()._create_request_from_scope(send)
        request.asgi_send = send  # type: ignore[attr-defined]
        self._request = request
        return request

    async def _send_response(self, send: Any, response: Any) -> None:
        if getattr(self._request, "streamed", False):
            return
        await super()._send_response(send, response)
