"""A StatsD server for tests: a UDP socket on loopback that keeps every metric it is sent.

StatsD lines look like ``prefix.name:value|type`` (``c`` counter, ``g`` gauge, ``ms`` timer),
several per datagram separated by newlines. :class:`StatsdListener` parses them as they come and
answers the questions tests ask: the sum of a counter, the last value of a gauge, the samples of
a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    kind: str  # "c", "g" or "ms"


def parse_line(line: str) -> Sample:
    """One StatsD line; a malformed one raises ValueError, failing the test that received it."""
    name, _, rest = line.partition(":")
    value, _, kind = rest.partition("|")
    kind = kind.split("|")[0]  # drop a sample rate
    if not name or kind not in ("c", "g", "ms"):
        raise ValueError(f"not a StatsD line: {line!r}")
    return Sample(name, float(value), kind)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes], None]) -> None:
        self._received = received

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._received(data)


class StatsdListener:
    """Collects the metrics sent to ``127.0.0.1:port`` while it is open."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> StatsdListener:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._received), local_addr=(self.host, 0))
        self._transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()

    def _received(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            if line:
                self.samples.append(parse_line(line))

    # What tests ask.

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}

    def counter(self, name: str) -> float:
        return sum(s.value for s in self.samples if s.name == name and s.kind == "c")

    def gauge_values(self, name: str) -> list[float]:
        return [s.value for s in self.samples if s.name == name and s.kind == "g"]

    def gauge(self, name: str) -> float | None:
        values = self.gauge_values(name)
        return values[-1] if values else None

    def timings(self, name: str) -> list[float]:
        return [s.value for s in self.samples if s.name == name and s.kind == "ms"]

    async def wait_for(self, predicate: Callable[[StatsdListener], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate` holds for what has arrived; fail showing what did."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"StatsD never matched; received {sorted(self.names())}: {self.samples[-20:]}")
            await asyncio.sleep(0.05)
