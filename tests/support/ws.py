"""A WebSocket client for tests, speaking the stream's JSON frames.

It checks what a browser's ``JSON.parse(event.data)`` needs: every frame is
a text frame holding JSON.  Keep-alive pings are skipped unless a test asks
for them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


def is_ping(frame: Frame) -> bool:
    return frame.get("event") == "ping"


class WSClient:
    """One open connection to the stream endpoint."""

    def __init__(self, connection: ClientConnection, skip_pings: bool = True) -> None:
        self.connection = connection
        self.skip_pings = skip_pings

    @property
    def close_code(self) -> int | None:
        """The code the server closed with; None while the connection is open."""
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    async def next_frame(self, timeout: float = 5.0, skip_pings: bool | None = None) -> Frame:
        """Return the next frame as a dict.

        Raises TimeoutError when none comes within `timeout`, and
        websockets' ConnectionClosed when the server closed the connection.
        """
        skip = self.skip_pings if skip_pings is None else skip_pings
        async with asyncio.timeout(timeout):
            while True:
                message = await self.connection.recv()
                assert isinstance(message, str), f"binary frame: {message[:200]!r}"
                frame = json.loads(message)
                assert isinstance(frame, dict), f"frame is not an object: {message[:200]}"
                if not (skip and is_ping(frame)):
                    return frame

    async def frames_until(
        self,
        predicate: Callable[[Frame], bool],
        timeout: float = 5.0,
        skip_pings: bool | None = None,
    ) -> list[Frame]:
        """Collect frames up to and including the first that `predicate` accepts.

        Fails the test, listing what came instead, after `timeout` seconds.
        """
        frames: list[Frame] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                frame = await self.next_frame(left, skip_pings)
            except TimeoutError:
                raise AssertionError(f"no matching frame within {timeout}s; got {len(frames)}: {frames[-5:]}") from None
            frames.append(frame)
            if predicate(frame):
                return frames

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes the connection; return the close code.

        Frames still arriving are discarded.
        """
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.connection.recv()
            except ConnectionClosed:
                pass
        return self.close_code

    async def send(self, message: str | bytes) -> None:
        await self.connection.send(message)

    async def close(self, code: int = 1000) -> None:
        await self.connection.close(code)


@asynccontextmanager
async def ws_client(
    url: str,
    *,
    skip_pings: bool = True,
    open_timeout: float = 10.0,
    **options: Any,
) -> AsyncIterator[WSClient]:
    """Connect to `url`; close the connection when the block ends.

    Extra keyword arguments go to ``websockets.asyncio.client.connect``
    (``max_size``, ``ping_interval``, ...).
    """
    options.setdefault("max_size", None)
    async with connect(url, open_timeout=open_timeout, **options) as connection:
        yield WSClient(connection, skip_pings)


async def collect(client: Any, count: int, timeout: float = 10.0) -> list[Frame]:
    """The next ``count`` frames of ``client`` (anything with ``next_frame``: a WebSocket or an
    event-stream client), all within ``timeout``."""
    async with asyncio.timeout(timeout):
        return [await client.next_frame(timeout) for _ in range(count)]
