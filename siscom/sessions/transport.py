"""The few things a session needs from a client's connection, apart from how a server provides them.

Sessions talk to a :class:`Transport`; the web layer adapts its server's websocket, or a streaming
HTTP response (siscom/web/server/sse_transport.py), to it. The seam
is narrow so that unit tests drive a session with a fake and the send path can be tuned without
touching session logic.
"""

from __future__ import annotations

from typing import Protocol


class ClientGone(Exception):
    """The client has disconnected; nothing more can be sent or received."""


class DirectWrites(Protocol):
    """Writing frames without awaiting: several frames in one write, from any callback."""

    def ready(self) -> bool:
        """True when what is written now goes out without waiting for the client."""

    def write(self, texts: list[str]) -> None:
        """Write ``texts``, in order, in one write (only when :meth:`ready`)."""


class Transport(Protocol):
    """A client's connection: a websocket, or an HTTP response streaming Server-Sent Events.

    A transport subclasses this protocol to take the defaults of what it need not provide: no
    direct writes, one :meth:`send` per frame, a close that carries its reason.
    """

    peer: str
    #: Writing without awaiting, when the connection offers it (None: every frame through send).
    direct: DirectWrites | None = None
    #: True when :meth:`close` carries no reason to the client, so the session says why in an
    #: error frame first (see :func:`siscom.core.stream.final_frame`).
    in_band_close: bool = False

    async def send(self, text: str) -> None: ...

    async def send_many(self, texts: list[str]) -> None:
        """Send ``texts`` in order (in one write where the transport can)."""
        for text in texts:
            await self.send(text)

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (it may wait behind data the client has not read)."""

    def abort(self) -> None:
        """Drop the connection now, whatever is still waiting to be written."""
