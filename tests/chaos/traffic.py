"""Traffic for the chaos tests: records going into the broker, frames coming out of clients.

Records carry their device, a sequence number and the wall-clock time they were sent, so a test
can check order, completeness and latency from what clients receive, whatever happened between.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from support import WSClient
from support.background import Background
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


def position(device_id: str, seq: int, **extra: Any) -> bytes:
    """A position record, as a tracker would send it, stamped with the time it is sent."""
    data = {"DEVICE_ID": device_id, "SEQ": seq, "SENT": time.time(), **extra}
    return json.dumps({"data": data}).encode()


def record_of(frame: Frame) -> dict[str, Any]:
    """The record a ``message`` or ``alert`` frame carries (its ``data`` object)."""
    return frame["data"]["data"]


class Producer:
    """One Kafka producer, writing keyed records one at a time and waiting for each ack.

    Keyed by device, so each device's records land in one partition, in order.
    """

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, linger_ms=0)

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, device_id: str, value: bytes) -> None:
        await self._producer.send_and_wait(topic, value, key=device_id.encode())

    async def send_many(self, topic: str, items: Iterable[tuple[str, bytes]]) -> None:
        """Send all at once (the producer batches them) and wait for every ack."""
        futures = [await self._producer.send(topic, value, key=device_id.encode()) for device_id, value in items]
        await asyncio.gather(*futures)


class FrameLog(Background):
    """Reads every frame one client receives, in the background, noting when each arrived.

    Pings are kept (``data_frames`` leaves them out). ``close_code`` is set once the server
    closed the connection.
    """

    def __init__(self, client: WSClient) -> None:
        self.client = client
        self.frames: list[tuple[float, Frame]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()

    async def _run(self) -> None:
        try:
            while True:
                message = await self.client.connection.recv()
                assert isinstance(message, str), f"binary frame: {message[:100]!r}"
                self.frames.append((time.monotonic(), json.loads(message)))
                self._arrived.set()
        except ConnectionClosed:
            self.close_code = self.client.close_code
            self.closed.set()
            self._arrived.set()

    def data_frames(self, since: int = 0) -> list[tuple[float, Frame]]:
        """Frames other than pings, from the ``since``-th frame on."""
        return [(at, frame) for at, frame in self.frames[since:] if frame.get("event") != "ping"]

    def pings(self) -> list[float]:
        return [at for at, frame in self.frames if frame.get("event") == "ping"]

    async def wait_until(self, predicate: Callable[[FrameLog], bool], timeout: float, what: str = "frames") -> None:
        """Wait until ``predicate(self)`` holds; fail the test after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    self._arrived.clear()
                    if self.closed.is_set():
                        raise AssertionError(f"connection closed ({self.close_code}) while waiting for {what}")
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout}s; {len(self.frames)} frames, last: {self.frames[-3:]}"
            ) from None


def sequences(frames: Sequence[tuple[float, Frame]], device_id: str, **match: Any) -> list[int]:
    """The SEQ numbers of one device's records among ``frames``, in arrival order."""
    numbers = []
    for _, frame in frames:
        record = record_of(frame)
        if record.get("DEVICE_ID") == device_id and all(record.get(k) == v for k, v in match.items()):
            numbers.append(record["SEQ"])
    return numbers


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
