"""A bare Server-Sent Events client for load: the SSE counterpart of :mod:`bench.wsclient`.

Cheap for the same reason: an :class:`asyncio.Protocol` that hands each chunk the socket
delivers to the sans-I/O decoder (:mod:`bench.sse`) and every event's data, with the time the
chunk arrived (the kernel's stamp, as the WebSocket client takes it), to the same callback the
WebSocket client feeds. An SSE event's data is the text
of the frame the WebSocket stream would send, so the recorders of :mod:`bench.clients` measure
both transports the same way.

SSE has no close handshake and no close codes. So that the harness can count endings the same
way, :attr:`SseStreamClient.closed` resolves with 1000 when the stream ended cleanly (this
client closed it, or the server ended the body) and 1006 when the connection dropped.
"""

from __future__ import annotations

import asyncio
from typing import cast

from bench.eventstream import request
from bench.sse import EventStreamDecoder, StreamRefused
from bench.wsclient import OnText, arrival, connect_opened

__all__ = ["SseStreamClient", "StreamRefused", "open_stream"]


class SseStreamClient(asyncio.Protocol):
    """One stream. ``on_text(payload, arrived)`` gets every event's data, in order."""

    transport = "sse"

    def __init__(self, host: str, port: int, path: str, on_text: OnText) -> None:
        self._request = request(path, f"{host}:{port}", {"Cache-Control": "no-cache"})
        self._decoder = EventStreamDecoder()
        self._on_text = on_text
        self._transport: asyncio.Transport | None = None
        self._closing = False
        loop = asyncio.get_running_loop()
        #: Resolves once the server answered 200 with an event stream (or fails with why not).
        self.opened: asyncio.Future[None] = loop.create_future()
        #: Resolves with 1000 (ended cleanly) or 1006 (dropped); see the module's docstring.
        self.closed: asyncio.Future[int] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # a stream's: it writes
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self._decoder.feed(data)
        except StreamRefused as refused:
            if not self.opened.done():
                self.opened.set_exception(refused)
            self.abort()
            return
        if not self.opened.done() and self._decoder.opened:
            self.opened.set_result(None)
        if payloads:
            arrived = arrival(self._transport)
            on_text = self._on_text
            for payload in payloads:
                on_text(payload, arrived)
        if self._decoder.ended and self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or StreamRefused("connection closed before the response"))
        if not self.closed.done():
            self.closed.set_result(1000 if self._closing or self._decoder.ended else 1006)

    def close(self, code: int = 1000) -> None:
        """End the stream: SSE has nothing to say first, so this closes the connection."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def open_stream(
    host: str, port: int, path: str, on_text: OnText, *, deflate: bool = False, timeout: float = 10.0
) -> SseStreamClient:
    """Connect and wait for the event stream's head; raise if either fails within ``timeout``.

    ``deflate`` is accepted for the WebSocket client's signature and ignored: an event stream is
    sent as it is (Hypercorn compresses no responses).
    """
    return await connect_opened(lambda: SseStreamClient(host, port, path, on_text), host, port, timeout)
