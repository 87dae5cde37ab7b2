"""Load for the security tests: a canary that measures data age, and clients that flood.

A canary is a well-behaved dashboard: it subscribes to one device and reads every frame; the
records of that device carry the time they were produced, so the canary knows each frame's age.
Flooders are attackers on raw sockets, in a process of their own (:mod:`bench.flooder`): they
send pings and subscribe messages as fast as the server takes them, never read, and reconnect
whenever the server drops them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

from chaos.traffic import Producer, percentile, position
from support import ws_client
from support.server import REPO_ROOT

from siscom.dev.processes import ChildProcess


class Flooders:
    """``count`` flooding clients in a process of their own (:mod:`bench.flooder`).

    Its output goes to `log_path`; the last line it prints when stopped is its tally.
    """

    def __init__(self, url: str, count: int, log_path: str | os.PathLike[str]) -> None:
        self.url = url
        self.count = count
        self.log_path = log_path
        self.connections = 0
        self.bytes_sent = 0
        self._process: ChildProcess | None = None

    def start(self) -> Flooders:
        if self.count:
            self._process = ChildProcess(
                [sys.executable, "-m", "bench.flooder", self.url, "--clients", str(self.count)],
                log_path=self.log_path,
                cwd=REPO_ROOT,
            )
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.stop(10)
        lines = [line for line in process.log_text().splitlines() if line.startswith("{")]
        if lines:
            tally = json.loads(lines[-1])
            self.connections, self.bytes_sent = tally["connections"], tally["bytes"]


@dataclass
class Canary:
    """One device's records, produced at ``rate`` per second, and one client reading them."""

    bootstrap: str
    topic: str
    url: str
    device: str
    rate: float = 50.0
    ages: list[tuple[float, float]] = field(default_factory=list)  # (arrival, age in seconds)
    close_code: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with ws_client(f"{self.url}?device_ids={self.device}") as client, Producer(self.bootstrap) as producer:
            reader = asyncio.create_task(self._read(client))
            seq = 0
            try:
                while not stop.is_set():
                    seq += 1
                    await producer.send(self.topic, self.device, position(self.device, seq))
                    await asyncio.sleep(1 / self.rate)
            finally:
                reader.cancel()
                await asyncio.wait((reader,))

    async def _read(self, client) -> None:
        try:
            while True:
                frame = await client.next_frame(timeout=3600)
                if frame.get("event") == "message":
                    now = time.time()
                    self.ages.append((time.monotonic(), now - frame["data"]["data"]["SENT"]))
        except Exception:
            self.close_code = client.close_code

    def window(self, since: float, until: float | None = None) -> list[float]:
        return [age for at, age in self.ages if at >= since and (until is None or at < until)]


def describe(ages: list[float]) -> str:
    if not ages:
        return "no frames"
    return f"p50 {percentile(ages, 0.5) * 1000:.0f} ms, p99 {percentile(ages, 0.99) * 1000:.0f} ms ({len(ages)} frames)"
