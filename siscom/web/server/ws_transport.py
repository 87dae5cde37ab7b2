"""Quart's websocket adapted to what a session needs (:class:`~siscom.sessions.transport.Transport`),
and the cheapest send path Quart offers for streaming many frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from quart.asgi import ASGIWebsocketConnection
from quart.wrappers import Websocket

from siscom.core.encodings import EncodingCache
from siscom.sessions.transport import Transport
from siscom.web.server.coalesce import DirectWriter
from siscom.web.server.link import HypercornConnection
from siscom.web.server.inbox import Inbox


class QuartTransport(Transport):
    """A :class:`~siscom.sessions.transport.Transport` over the websocket of a Quart route
    (already accepted); ``connection`` drops the TCP connection when the server allows it, and
    (given the app's ``frames``, see :func:`~siscom.web.server.coalesce.frame_cache`) writes frames below
    ASGI, several in one write."""

    __slots__ = ("_websocket", "peer", "_closed", "_connection", "direct", "receive")

    def __init__(
        self,
        websocket: Websocket,
        peer: str,
        connection: HypercornConnection | None,
        *,
        frames: EncodingCache | None = None,
    ) -> None:
        self._websocket = websocket
        self.peer = peer
        #: What the client sends, read straight from the websocket's queue (Quart 0.22:
        #: ``Websocket._receive``, the queue's ``get``). The websocket is accepted, so Quart's
        #: ``receive`` would only add its accept, and one coroutine frame more for each of the
        #: thousands of connections that wait for a message most of their life.
        self.receive: Callable[[], Coroutine[Any, Any, str | bytes]] = websocket._receive
        self._closed = False
        self._connection = connection
        #: Coalesced writes below ASGI (siscom/web/server/coalesce.py), unless turned off or unavailable.
        self.direct = DirectWriter.of(connection, frames) if frames is not None else None

    async def send(self, text: str) -> None:
        await self._websocket.send(text)

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        await self._websocket.close(code, reason)

    def abort(self) -> None:
        if self._connection is not None:
            self._connection.abort()


class StreamWebsocket(Websocket):
    """Quart's websocket object, with a ``send`` fit for streaming many frames.

    Quart's own ``send`` yields to the event loop before every frame (so that a tight loop of
    sends cannot starve the loop) and runs the idempotent accept again each time. A session
    writes its frames in batches and yields once per batch, so per frame both are pure cost.
    This ``send`` hands the frame straight to the ASGI ``websocket.send`` message. It is the
    application's :attr:`quart.Quart.websocket_class`.
    """

    _stream_accepted = False
    #: The ASGI ``send`` of this websocket's connection (see :class:`StreamWebsocketConnection`).
    asgi_send: Any = None

    async def accept(self, headers: Any = None, subprotocol: str | None = None) -> None:
        await super().accept(headers, subprotocol)
        self._stream_accepted = True

    async def send(self, data: str | bytes) -> None:
        if not self._stream_accepted:
            await self.accept()
        # The ASGI send the connection gave this websocket (a subclass may use it).
        await self._send(data)

    async def receive(self) -> str | bytes:
        # Quart's runs the idempotent accept (building an empty Headers) before every message.
        if not self._stream_accepted:
            await self.accept()
        return await self._receive()


class StreamWebsocketConnection(ASGIWebsocketConnection):
    """Quart's ASGI websocket handling, without the ``websocket_sent`` signal after each frame,
    with a lighter queue for what the client sends (:class:`~siscom.web.server.inbox.Inbox`), and the
    route run in the server's task for the application rather than in a task of its own.

    Nothing in this service listens to that signal, and firing it costs a coroutine per frame
    per client. It also hands the websocket the ASGI ``send`` it was given, through which the
    route finds the server's connection (:class:`~siscom.web.server.link.HypercornConnection`).
    It is the application's :attr:`quart.Quart.asgi_websocket_class`.
    """

    def __init__(self, app: Any, scope: Any) -> None:
        super().__init__(app, scope)
        # Quart 0.22 uses its queue only through put (handle_messages) and get (the websocket's
        # receive, bound in _create_websocket_from_scope, which runs after this).
        self.queue = Inbox()  # type: ignore[assignment]
        #: The task running the route, while it runs; whether the client's leaving cancelled it.
        self._route: asyncio.Task[Any] | None = None
        self._left = False

    async def __call__(self, receive: Any, send: Any) -> None:
        """What Quart 0.22's does (``asgi.py``: a task receiving, a task running the route, the
        first to end cancels the other, their errors raised), with the route in this task: one
        task, and the wait for the first of two, fewer per connection. Quart cancels the route
        when the client leaves; here the receiving task's end does, with a cancellation that is
        taken back once the route has ended (any other cancellation goes through)."""
        websocket = self._create_websocket_from_scope(send)
        receiver = asyncio.ensure_future(self.handle_messages(receive))
        route = self._route = asyncio.current_task()
        receiver.add_done_callback(self._receiver_done)
        try:
            await self.handle_websocket(websocket, send)
        except asyncio.CancelledError:
            if not self._left or (route is not None and route.uncancel() > 0):
                raise
        finally:
            self._route = None
            if not receiver.done():
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
        if not receiver.cancelled() and (error := receiver.exception()) is not None:
            raise error

    def _receiver_done(self, receiver: asyncio.Future[None]) -> None:
        """The client left (``websocket.disconnect``), or receiving failed: end the route."""
        route = self._route
        if route is not None and not self._left:
            self._left = True
            route.cancel()

    def _create_websocket_from_scope(self, send: Any) -> Websocket:
        websocket = super()._create_websocket_from_scope(send)
        websocket.asgi_send = send  # type: ignore[attr-defined]  # a StreamWebsocket (see install)
        return websocket

    async def send_data(self, send: Any, data: str | bytes) -> None:
        if isinstance(data, str):
            await send({"type": "websocket.send", "bytes": None, "text": data})
        else:
            await send({"type": "websocket.send", "bytes": data, "text": None})
