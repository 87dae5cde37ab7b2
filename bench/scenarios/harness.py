"""What every scenario shares: the options, the shape of a load, the broker and the servers.

A scenario is a module of this package that defines ``SCENARIO``, a :class:`Scenario`: its name,
the coroutine that runs it against a :class:`Bench` and a list of servers, and the servers it
runs by default.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import Subscription
from bench.report import Result
from bench.servers import ServerUnderTest, Target
from siscom.dev.broker import TansuBroker, create_topics

MB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    workdir: Path
    smoke: bool = False
    #: Records per second, overriding the scenario's default (steady, overload).
    rate: float | None = None
    #: Clients of viewport's end-to-end part, overriding its default.
    clients: int | None = None
    seed: int = 1
    #: Run the gateway with clients that offer permessage-deflate beside the same without
    #: (``--deflate``: targets siscom and siscom-deflate unless ``--targets`` names others).
    deflate: bool = False
    #: Length of every load scenario's measured window, instead of its default (short A/B runs).
    seconds: float | None = None
    #: Processes the load scenarios spread their clients over, instead of each one's default.
    client_processes: int | None = None
    #: Records in the log of the storm scenario, instead of its default.
    records: int | None = None
    #: Another tree of this project whose gateway the storm scenario runs too (a column "main").
    server_root: Path | None = None
    #: Settings for the gateway the storm scenario starts (``--set NAME=VALUE``).
    server_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shape:
    """A load: who subscribes to what, and how fast records come."""

    devices: int
    clients: int
    #: Devices per client; ``None`` subscribes every client to every device.
    per_client: int | None
    rate: float
    warmup: float
    duration: float
    drain: float
    client_processes: int = 2
    #: Handshakes in flight at once per client process (fewer for thousands of clients: a burst
    #: beyond the listen backlog costs SYN retransmissions, seconds each).
    connect_concurrency: int = 64

    def subscriptions(self, device_ids: Sequence[str], seed: int) -> list[Subscription]:
        if self.per_client is None:
            return [None] * self.clients
        rng = random.Random(seed)
        return [tuple(rng.sample(device_ids, self.per_client)) for _ in range(self.clients)]

    def params(self) -> dict[str, Any]:
        """The shape as the parameters printed above a scenario's table."""
        return {
            "devices": self.devices,
            "clients": self.clients,
            "devices_per_client": "all" if self.per_client is None else self.per_client,
            "rate": self.rate,
            "window_s": self.duration,
        }


class Bench:
    """What all scenarios share: the broker, a work directory for logs, and the options."""

    def __init__(self, broker: TansuBroker, options: Options) -> None:
        self.broker = broker
        self.options = options

    async def topic(self, label: str, partitions: int = 1) -> str:
        """A fresh topic. Runs never share one: tansu's memory storage slows down with every batch
        a topic holds, so a long-lived topic would make later runs pay for earlier ones."""
        name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        await create_topics(self.broker.bootstrap, {name: partitions})
        return name

    def server(self, target: Target, topic: str, **env: str) -> ServerUnderTest:
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "KAFKA_AUTO_OFFSET_RESET": "latest",
            **env,
        }
        log = self.options.workdir / f"{target.name}-{topic}.log"
        return ServerUnderTest(target, settings, log)


@dataclass(frozen=True)
class Scenario:
    """One named scenario, as ``python -m bench NAME`` runs it."""

    name: str
    run: Callable[[Bench, Sequence[Target]], Awaitable[Result]]
    #: The servers it runs unless ``--targets`` says otherwise.
    targets: tuple[Target, ...]
    #: Where ``all`` runs it: lower first.
    order: int


async def wait_connections(server: ServerUnderTest, count: int, timeout: float = 30.0) -> None:
    """Wait until the server counts ``count`` streams (only a single process can say so)."""
    if "--workers" in server.target.args:
        await asyncio.sleep(1.0)
        return
    deadline = time.monotonic() + timeout
    while (await server.stats()).get("connections", 0) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.target.name} never counted {count} connections")
        await asyncio.sleep(0.1)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
