"""The few things a session needs from a WebSocket, apart from how the server provides them.

Sessions talk to a :class:`Transport`; :class:`QuartTransport` adapts the websocket object of a
Quart route. Keeping this seam narrow lets unit tests drive a session with a fake and lets the
send path be tuned without touching session logic.
"""

from __future__ import annotations

from typing import Any, Protocol

from quart.asgi import ASGIWebsocketConnection
from quart.wrappers import Websocket


class ClientGone(Exception):
    """The client has disconnected; nothing more can be sent or received."""


class Transport(Protocol):
    peer: str
    gone: bool

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int, reason: str) -> None: ...


class QuartTransport:
    """A :class:`Transport` over the websocket of a Quart route (already accepted)."""

    __slots__ = ("_websocket", "peer", "gone", "_closed")

    def __init__(self, websocket: Websocket, peer: str) -> None:
        self._websocket = websocket
        self.peer = peer
        #: Set by the route when Quart reports the client's disconnect.
        self.gone = False
        self._closed = False

    async def send(self, text: str) -> None:
        if self.gone:
            raise ClientGone(self.peer)
        await self._websocket.send(text)

    async def receive(self) -> str | bytes:
        return await self._websocket.receive()

    async def close(self, code: int, reason: str) -> None:
        if self.gone or self._closed:
            return
        self._closed = True
        await self._websocket.close(code, reason)


class StreamWebsocket(Websocket):
    """Quart's websocket object, with a ``send`` fit for streaming many frames.

    Quart's own ``send`` yields to the event loop before every frame (so that a tight loop of
    sends cannot starve the loop) and runs the idempotent accept again each time. A session
    writes its frames in batches and yields once per batch, so per frame both are pure cost.
    This ``send`` hands the frame straight to the ASGI ``websocket.send`` message. It is the
    application's :attr:`quart.Quart.websocket_class`.
    """

    _stream_accepted = False
    #: The server's ASGI ``send`` for this connection (see :mod:`siscom.web.control_frames`).
    asgi_send: Any = None

    async def accept(self, headers: Any = None, subprotocol: str | None = None) -> None:
        await super().accept(headers, subprotocol)
        self._stream_accepted = True

    async def send(self, data: str | bytes) -> None:
        if not self._stream_accepted:
            await self.accept()
        # The ASGI send the connection gave this websocket (a subclass may use it).
        await self._send(data)


class StreamWebsocketConnection(ASGIWebsocketConnection):
    """Quart's ASGI websocket handling, without the ``websocket_sent`` signal after each frame.

    Nothing in this service listens to that signal, and firing it costs a coroutine per frame
    per client. It is the application's :attr:`quart.Quart.asgi_websocket_class`.
    """

    def _create_websocket_from_scope(self, send: Any) -> Websocket:
        websocket = super()._create_websocket_from_scope(send)
        websocket.asgi_send = send  # type: ignore[attr-defined]  # a StreamWebsocket
        return websocket

    async def send_data(self, send: Any, data: str | bytes) -> None:
        if isinstance(data, str):
            await send({"type": "websocket.send", "bytes": None, "text": data})
        else:
            await send({"type": "websocket.send", "bytes": data, "text": None})
