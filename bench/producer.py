"""Records at a fixed rate, each stamped with the moment it was handed to the Kafka client.

The records are the simulator's (:class:`siscom.dev.simulator.FleetSimulator`), one template per
device made once; sending one costs a byte concatenation that writes the current time into
``metadata.producer_ts_ms``. The clients read that stamp back to time each delivery end to end.

The rate is kept by the clock, not by sleeping a fixed time per record: every tick sends
whatever the elapsed time says is due, so a slow tick is made up by the next one. A window
counts the records stamped inside it per device, which is what the clients' subscriptions turn
into the number of deliveries expected.

A moving producer sends the simulator's tracks instead: every record is a fresh report of where
its vehicle has driven since its last one, so devices cross the boxes of map clients. Its window
also keeps every record's position, from which a box client's deliveries are counted.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from siscom.core.geo import BBox
from siscom.core.records import decode_value
from siscom.dev.simulator import FleetSimulator

#: How often the pacing loop wakes. Records due in between go out together, in one batch per
#: partition: tansu's memory storage gets slower with every batch a topic holds, so the producer
#: keeps batches few (at most one per tick) rather than letting the client linger.
TICK = 0.005
_STAMP = re.compile(rb'"producer_ts_ms":\d+')


@dataclass
class Window:
    """The records stamped in ``[t0_ms, t1_ms)``."""

    t0_ms: float
    t1_ms: float
    per_device: Counter[str]
    #: ``(lat, lon)`` of every record sent, sorted by latitude (moving producers only).
    positions: list[tuple[float, float]] | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return (self.t1_ms - self.t0_ms) / 1000.0

    @property
    def records(self) -> int:
        return sum(self.per_device.values())

    def expected(self, devices: Sequence[str] | BBox | None) -> int:
        """Deliveries a client subscribed to ``devices`` (``None``: all) should receive.

        For a box: the records whose position is in it. A device entering the box arrives with
        its position frame and leaving it sends a ``leave`` frame instead, so every record inside
        is one delivery and none outside is.
        """
        if devices is None:
            return self.records
        if isinstance(devices, BBox):
            if self.positions is None:
                raise ValueError("only a moving producer's window knows where its records were")
            first = bisect.bisect_left(self.positions, (devices.min_lat, -math.inf))
            last = bisect.bisect_right(self.positions, (devices.max_lat, math.inf))
            return sum(devices.contains(lat, lon) for lat, lon in self.positions[first:last])
        return sum(self.per_device[device] for device in devices)


def record_templates(devices: int, seed: int = 0) -> list[tuple[str, bytes, bytes]]:
    """``(device_id, head, tail)`` per device: ``head + stamp + tail`` is one record."""
    templates = []
    for device_id, value in FleetSimulator(devices, seed).step(time.time()):
        match = _STAMP.search(value)
        assert match is not None, "simulator records carry metadata.producer_ts_ms"
        templates.append((device_id, value[: match.start()] + b'"producer_ts_ms":', value[match.end() :]))
    return templates


def _position(value: bytes) -> tuple[float, float]:
    """Where a record says its device is, read as the gateway reads it."""
    position = decode_value(value, max_bytes=1 << 20).position
    assert position is not None, "simulator records carry a position"
    return position


class FixedRateProducer:
    """Sends the devices' records round-robin at ``rate`` records per second.

    ``moving``: each record is the simulator's next report of its vehicle, driven to the moment it
    is planned to go out (see :meth:`prepare`); otherwise the same record per device with a fresh
    stamp.
    """

    def __init__(
        self, bootstrap: str, topic: str, devices: int, seed: int = 0, *, moving: bool = False, tick: float = TICK
    ) -> None:
        """``tick``: how often the pacing loop wakes (see :data:`TICK`); a run of minutes needs a
        longer one, or the broker slows down under the batches the topic accumulates."""
        self.topic = topic
        self._tick = tick
        self._fleet: FleetSimulator | None = None
        #: Where each device is before the first record is sent (moving producers only).
        self.start_positions: dict[str, tuple[float, float]] = {}
        if moving:
            self._fleet = FleetSimulator(devices, seed)
            for device_id, value in self._fleet.step(time.time()):
                self.start_positions[device_id] = _position(value)
            self._templates = [(device_id.encode(), device_id, b"", b"") for device_id in self._fleet.device_ids]
        else:
            self._templates = [
                (device_id.encode(), device_id, head, tail) for device_id, head, tail in record_templates(devices, seed)
            ]
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1, max_batch_size=512 * 1024)
        self._next = 0
        self._plan: list[tuple[bytes, str, bytes, bytes, tuple[float, float]]] | None = None
        self.failed = 0

    @property
    def device_ids(self) -> list[str]:
        return [device_id for _, device_id, _, _ in self._templates]

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def prepare(self, rate: float, seconds: float) -> None:
        """Drive the fleet ahead for the next :meth:`run` (moving producers only; otherwise nothing).

        The tracks are computed before the window, not while sending: a vehicle's report costs
        tens of microseconds (more after a long silence), which would slow the pacing loop and
        count as the harness's CPU in the window. Each record is its vehicle's report at the time
        it is planned to go out; the stamp is still written when it is sent.
        """
        fleet = self._fleet
        if fleet is None:
            return
        count = len(self._templates)
        base = time.time()
        plan = []
        for n in range(int(rate * seconds) + 1):
            index = (self._next + n) % count
            ((device_id, value),) = fleet.step(base + n / rate, which=[index])
            match = _STAMP.search(value)
            assert match is not None, "simulator records carry metadata.producer_ts_ms"
            head, tail = value[: match.start()] + b'"producer_ts_ms":', value[match.end() :]
            plan.append((self._templates[index][0], device_id, head, tail, _position(value)))
        self._plan = plan

    async def run(self, rate: float, seconds: float) -> Window:
        """Produce for ``seconds`` at ``rate``; return the window of what was sent."""
        if self._fleet is not None and self._plan is None:
            self.prepare(rate, seconds)
        plan, self._plan = self._plan, None
        producer, topic, templates = self._producer, self.topic, self._templates
        count = len(templates)
        per_device: Counter[str] = Counter()
        positions: list[tuple[float, float]] = []
        on_done = self._on_done
        # Windows start and end on whole milliseconds, so that every stamp is in exactly one.
        t0_ms = await _next_millisecond()
        start = time.monotonic()
        end = start + seconds
        sent = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * rate) - sent
            if plan is not None:
                due = min(due, len(plan) - sent)
            for n in range(sent, sent + due):
                if plan is None:
                    key, device_id, head, tail = templates[self._next]
                else:
                    key, device_id, head, tail, position = plan[n]
                    positions.append(position)
                self._next = (self._next + 1) % count
                stamp = time.time_ns() // 1_000_000
                future = await producer.send(topic, head + str(stamp).encode() + tail, key=key)
                future.add_done_callback(on_done)
                per_device[device_id] += 1
            sent += max(due, 0)
            await asyncio.sleep(self._tick)
        t1_ms = await _next_millisecond()
        return Window(t0_ms, t1_ms, per_device, sorted(positions) if plan is not None else None)

    async def flush(self) -> None:
        await self._producer.flush()

    def _on_done(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1


async def _next_millisecond() -> int:
    """Wait for the wall clock to enter the next millisecond, and return it."""
    target = time.time_ns() // 1_000_000 + 1
    while time.time_ns() // 1_000_000 < target:
        await asyncio.sleep(0.0005)
    return target


async def fill(bootstrap: str, topic: str, records: int, devices: int = 1000, batch: int = 5000) -> None:
    """Write ``records`` records to ``topic`` as fast as the broker takes them (for the pipeline scenario)."""
    templates = record_templates(devices)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=256 * 1024)
    await producer.start()
    try:
        stamp = str(time.time_ns() // 1_000_000).encode()
        for first in range(0, records, batch):
            futures = []
            for index in range(first, min(first + batch, records)):
                device_id, head, tail = templates[index % devices]
                futures.append(await producer.send(topic, head + stamp + tail, key=device_id.encode()))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
