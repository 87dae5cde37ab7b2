"""The few things a session needs from a WebSocket, apart from how the server provides them.

Sessions talk to a :class:`Transport`; :class:`QuartTransport` adapts the websocket object of a
Quart route. Keeping this seam narrow lets unit tests drive a session with a fake and lets the
send path be tuned without touching session logic.
"""

from __future__ import annotations

from typing import Protocol

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
