"""A raw Server-Sent Events client for tests: plain asyncio streams, the bytes as they arrive.

Not a browser: it shows the head and every byte of the event stream (after the chunked coding),
so tests can check the wire format exactly, stop reading, or drop the connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from bench.eventstream import BodyDecoder, Event, EventParser, Head, request, take_head


class ResponseEnded(Exception):
    """The server ended the response (or the connection) while an event was awaited."""


class SSEClient:
    """One request to the stream endpoint and its response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head: Head | None = None
        #: Every body byte received so far (the event stream itself, or an error's JSON).
        self.body = bytearray()
        self.parser = EventParser()
        self._decoder: BodyDecoder | None = None
        self._pending: list[Event] = []
        #: True once the body is complete (the server ended the response).
        self.ended = False

    @property
    def status(self) -> int:
        assert self.head is not None
        return self.head.status

    @property
    def headers(self) -> dict[str, str]:
        assert self.head is not None
        return self.head.headers

    @property
    def chunks(self) -> list[int]:
        """The sizes of the body's chunks so far: one per write of the server."""
        return [] if self._decoder is None else self._decoder.chunks

    def json(self) -> Any:
        return json.loads(self.body)

    async def read_head(self, timeout: float = 5.0) -> Head:
        buffer = bytearray()
        async with asyncio.timeout(timeout):
            while (head := take_head(buffer)) is None:
                data = await self.reader.read(65536)
                if not data:
                    raise ResponseEnded(f"connection closed before the head: {bytes(buffer)[:200]!r}")
                buffer += data
        self.head = head
        self._decoder = BodyDecoder(head)
        self.ended = self._decoder.done
        if buffer:
            self._take(bytes(buffer))
        return head

    def _take(self, data: bytes) -> None:
        assert self._decoder is not None
        body = self._decoder.feed(data)
        self.body += body
        self._pending += self.parser.feed(body)
        self.ended = self._decoder.done

    async def read_more(self, timeout: float = 5.0) -> bool:
        """Read what comes next; False when the connection ended."""
        async with asyncio.timeout(timeout):
            data = await self.reader.read(65536)
        if not data:
            return False
        self._take(data)
        return True

    async def read_body(self, timeout: float = 5.0) -> bytes:
        """The whole body (the response must end)."""
        async with asyncio.timeout(timeout):
            while not self.ended:
                if not await self.read_more(timeout):
                    break
        return bytes(self.body)

    async def next_event(self, timeout: float = 5.0, *, skip_pings: bool = True) -> Event:
        """The next event (keep-alive pings skipped unless asked for)."""
        async with asyncio.timeout(timeout):
            while True:
                while self._pending:
                    event = self._pending.pop(0)
                    if not (skip_pings and json.loads(event.data).get("event") == "ping"):
                        return event
                if self.ended or not await self.read_more(timeout):
                    raise ResponseEnded(f"response ended; body tail {bytes(self.body[-300:])!r}")

    async def next_frame(self, timeout: float = 5.0, *, skip_pings: bool = True) -> dict[str, Any]:
        """The next event's data as the frame object (what ``JSON.parse(event.data)`` gives)."""
        return json.loads((await self.next_event(timeout, skip_pings=skip_pings)).data)

    def abort(self) -> None:
        """Drop the connection without a FIN's courtesy of reading what is left."""
        transport = self.writer.transport
        transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def open_sse(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    read_head: bool = True,
    timeout: float = 5.0,
    limit: int = 2**16,
    receive_buffer: int | None = None,
) -> SSEClient:
    """Send the request for ``url`` (``http://host:port/path?query``) and read the head.

    ``receive_buffer``: the socket's SO_RCVBUF, small for a client that is to stall (``limit``
    bounds what asyncio reads ahead of the test: twice it, then it stops reading the socket).
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port)), timeout)
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    writer.write(request(target, parts.netloc, headers, method=method))
    client = SSEClient(reader, writer)
    if read_head:
        try:
            await client.read_head(timeout)
        except BaseException:
            await client.close()
            raise
    return client


@asynccontextmanager
async def sse_client(url: str, headers: Mapping[str, str] | None = None, **options: Any) -> AsyncIterator[SSEClient]:
    client = await open_sse(url, headers, **options)
    try:
        yield client
    finally:
        await client.close()
