"""A fleet of simulated GPS trackers driving around Querétaro.

The demo (`siscom dev`), the benchmarks and the tests need telemetry that
looks like the real thing: records shaped like the product brief's, from
vehicles that move plausibly, so a map drawn from the stream shows cars
following curves, slowing down for bends and stopping now and then, rather
than points jumping at random.

`FleetSimulator` is the model and does no I/O: given the times at which
trackers report, it yields their records, and the same seed and times give
the same bytes.  `run_simulator` drives it in real time against a Kafka
topic, at a bounded rate, and survives the broker going away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

__all__ = [
    "QUERETARO",
    "FleetSimulator",
    "SimulatorReport",
    "device_ids",
    "run_simulator",
]

logger = logging.getLogger(__name__)

QUERETARO = (20.652472, -100.391423)
"""Centre of the simulated area: the position in the product brief."""

AREA_RADIUS_M = 6_000.0
"""Vehicles drive between waypoints within this distance of the centre."""

FIRST_DEVICE_ID = 848_086_072
"""The brief's example device ``0848086072``; seed 0 starts the fleet there,
so the brief's sample URLs show data from the demo unchanged."""

SPEED_LIMIT_KMH = 80.0
SOURCE = "siscom-simulator"

# Driving model.  Turn and speed changes are bounded per second, which is
# what makes successive positions of one vehicle look like a real track.
_MAX_TURN_DEG_S = 30.0
_TURN_RADIUS_M = 8.0  # tightest circle a car drives: no turning on the spot
_ACCEL_KMH_S = 9.0  # about 2.5 m/s²
_BRAKE_KMH_S = 15.0  # about 4.2 m/s²
_ARRIVAL_M = 25.0
_PARK_CHANCE = 0.3
_MAX_TICK_S = 1.0
_MAX_TICKS = 120  # a vehicle silent for longer skips ahead with coarser ticks
_METRES_PER_DEG_LAT = 111_320.0


def device_ids(devices: int, seed: int = 0) -> list[str]:
    """The 10-digit ids of the fleet `FleetSimulator(devices, seed)` drives.

    Consecutive numbers, like trackers from one shipment; fleets with
    different seeds and the same size do not overlap.
    """
    first = FIRST_DEVICE_ID + seed * devices
    return [f"{(first + i) % 10**10:010d}" for i in range(devices)]


def _move(lat: float, lon: float, heading_deg: float, metres: float) -> tuple[float, float]:
    # Flat-earth approximation: plenty for the few kilometres of a city.
    theta = math.radians(heading_deg)
    north = metres * math.cos(theta)
    east = metres * math.sin(theta)
    lat2 = lat + north / _METRES_PER_DEG_LAT
    lon2 = lon + east / (_METRES_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat2, lon2


def _distance_and_bearing(lat: float, lon: float, lat2: float, lon2: float) -> tuple[float, float]:
    north = (lat2 - lat) * _METRES_PER_DEG_LAT
    east = (lon2 - lon) * _METRES_PER_DEG_LAT * math.cos(math.radians(lat))
    return math.hypot(north, east), math.degrees(math.atan2(east, north)) % 360.0


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class _Vehicle:
    """One tracker: its position, motion and a private random stream.

    Each vehicle owns its random generator so its track depends only on its
    own report times, not on how often the others report.
    """

    def __init__(self, device_id: str, rng: random.Random) -> None:
        self.device_id = device_id
        self.rng = rng
        self.lat, self.lon = self._random_point()
        self.target = self._next_target()
        _, bearing = _distance_and_bearing(self.lat, self.lon, *self.target)
        self.heading = (bearing + rng.uniform(-30.0, 30.0)) % 360.0
        self.cruise_kmh = rng.uniform(30.0, 60.0)
        self.parked_for = rng.uniform(5.0, 90.0) if rng.random() < _PARK_CHANCE else 0.0
        self.speed_kmh = 0.0 if self.parked_for else self.cruise_kmh * 0.5
        self.satellites = rng.randint(7, 12)
        self.odometer_m = rng.uniform(5_000.0, 300_000.0) * 1_000.0
        self.clock: float | None = None
        self.seq = 0

    @property
    def engine_on(self) -> bool:
        return self.parked_for <= 0.0

    def _random_point(self) -> tuple[float, float]:
        # Uniform over the disc around the centre.
        distance = AREA_RADIUS_M * math.sqrt(self.rng.random())
        return _move(*QUERETARO, self.rng.uniform(0.0, 360.0), distance)

    def _next_target(self) -> tuple[float, float]:
        point = self._random_point()
        for _ in range(10):  # prefer a trip worth the name
            if _distance_and_bearing(self.lat, self.lon, *point)[0] > 300.0:
                break
            point = self._random_point()
        return point

    def advance(self, now: float) -> None:
        """Drive from the previous report time to `now`."""
        if self.clock is None:
            self.clock = now
            return
        elapsed = now - self.clock
        if elapsed <= 0.0:  # a clock that went back: stay put
            return
        self.clock = now
        ticks = min(math.ceil(elapsed / _MAX_TICK_S), _MAX_TICKS)
        for _ in range(ticks):
            self._tick(elapsed / ticks)

    def _tick(self, dt: float) -> None:
        rng = self.rng
        if rng.random() < 0.03 * dt:
            self.satellites = int(_clamp(self.satellites + rng.choice((-1, 1)), 4, 14))
        if self.parked_for > 0.0:
            self.parked_for -= dt
            self.speed_kmh = 0.0
            return

        distance, bearing = _distance_and_bearing(self.lat, self.lon, *self.target)
        error = (bearing - self.heading + 180.0) % 360.0 - 180.0
        yaw_rate = min(_MAX_TURN_DEG_S, math.degrees(self.speed_kmh / 3.6 / _TURN_RADIUS_M))
        turn = _clamp(error, -yaw_rate * dt, yaw_rate * dt)
        self.heading = (self.heading + turn) % 360.0

        # Drivers wander around their cruising speed, slow down for bends
        # and when arriving.
        self.cruise_kmh = _clamp(self.cruise_kmh + rng.gauss(0.0, 1.5) * math.sqrt(dt), 20.0, 90.0)
        bend = math.cos(math.radians(min(abs(error), 90.0)))
        wanted = min(self.cruise_kmh * max(0.25, bend), max(10.0, distance * 0.5))
        change = _clamp(wanted - self.speed_kmh, -_BRAKE_KMH_S * dt, _ACCEL_KMH_S * dt)
        self.speed_kmh = max(0.0, self.speed_kmh + change)

        metres = self.speed_kmh / 3.6 * dt
        self.lat, self.lon = _move(self.lat, self.lon, self.heading, metres)
        self.odometer_m += metres
        if distance <= max(_ARRIVAL_M, metres):
            self.target = self._next_target()
            if rng.random() < _PARK_CHANCE:
                self.parked_for = rng.uniform(30.0, 240.0)
                self.speed_kmh = 0.0

    def _common(self, now: float) -> dict[str, str]:
        return {
            "DEVICE_ID": self.device_id,
            "LATITUD": f"{self.lat:+.6f}",
            "LONGITUD": f"{self.lon:+.6f}",
            "SPEED": f"{self.speed_kmh:.2f}",
            "GPS_DATETIME": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)),
        }

    def _envelope(self, now: float, data: dict[str, str], raw: str) -> bytes:
        self.seq += 1
        record: dict[str, Any] = {
            "data": data,
            "decoded": {},
            "metadata": {
                "producer_ts_ms": int(now * 1000),
                "source": SOURCE,
                "seq": self.seq,
            },
            "raw": raw,
            "uuid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
        }
        return orjson.dumps(record)

    def position_record(self, now: float) -> bytes:
        data = self._common(now)
        heading = round(self.heading) % 360
        # A gentle made-up terrain around the city's 1,820 m.
        altitude = 1820 + round(25 * math.sin(self.lat * 700) * math.cos(self.lon * 500))
        engine = "ON" if self.engine_on else "OFF"
        data.update(
            {
                "HEADING": str(heading),
                "ALTITUDE": str(altitude),
                "ODOMETER": str(int(self.odometer_m)),
                "ENGINE_STATUS": engine,
                "SATELLITES": str(self.satellites),
            }
        )
        # A made-up device frame, so that "raw" has a realistic size.
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        raw = (
            f"+RESP:GTFRI,{self.device_id},{self.lat:.6f},{self.lon:.6f},"
            f"{self.speed_kmh:.1f},{heading},{altitude},{stamp},{self.satellites},{engine}$"
        )
        return self._envelope(now, data, raw)

    def alert_record(self, now: float) -> bytes:
        if not self.engine_on:
            kind = "IGNITION_OFF"
        elif self.speed_kmh > SPEED_LIMIT_KMH:
            kind = "SPEEDING"
        else:
            kind = self.rng.choice(("HARSH_BRAKING", "HARSH_ACCELERATION", "GEOFENCE_EXIT"))
        data = self._common(now)
        data["ALERT"] = kind
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        raw = f"+RESP:GTALM,{self.device_id},{kind},{self.lat:.6f},{self.lon:.6f},{stamp}$"
        return self._envelope(now, data, raw)


class FleetSimulator:
    """`devices` vehicles with stable ids, driven by one seed.

    Time is whatever the caller says it is: `step` is given the report time
    and does no I/O, so tests can replay an hour in a millisecond.
    """

    def __init__(self, devices: int, seed: int = 0) -> None:
        if devices < 1:
            raise ValueError("a fleet needs at least one device")
        self.seed = seed
        self._vehicles = [
            _Vehicle(device_id, random.Random(f"{seed}:{index}"))
            for index, device_id in enumerate(device_ids(devices, seed))
        ]

    def __len__(self) -> int:
        return len(self._vehicles)

    @property
    def device_ids(self) -> list[str]:
        return [vehicle.device_id for vehicle in self._vehicles]

    def step(self, now: float, which: Iterable[int] | None = None) -> list[tuple[str, bytes]]:
        """Advance vehicles to `now` (seconds since the epoch) and report.

        Returns one ``(device_id, record)`` per vehicle, or only for the
        vehicle indices in `which`.  A vehicle's first report is where it
        starts; later ones are where it has driven since its previous report.
        """
        vehicles = self._vehicles if which is None else [self._vehicles[i] for i in which]
        records = []
        for vehicle in vehicles:
            vehicle.advance(now)
            records.append((vehicle.device_id, vehicle.position_record(now)))
        return records

    def alert(self, now: float, index: int) -> tuple[str, bytes]:
        """An alert record from vehicle `index`, where it was last reported."""
        vehicle = self._vehicles[index]
        return vehicle.device_id, vehicle.alert_record(now)


@dataclass(frozen=True)
class SimulatorReport:
    """What `run_simulator` delivered: records acknowledged by the broker."""

    positions: int
    alerts: int
    reconnects: int


@dataclass
class _Progress:
    positions: int = 0
    alerts: int = 0
    reconnects: int = 0
    scheduled: int = 0  # position records attempted, acked or not
    next_vehicle: int = 0
    failures: int = 0  # connection failures since records last went through


_TICK_S = 0.02
_BURST_S = 0.1  # at most this much of the rate is sent in one go
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_BACKOFF_JITTER_S = 0.1


async def run_simulator(
    bootstrap: str,
    topic: str,
    *,
    devices: int,
    rate: float,
    duration: float | None = None,
    alerts_topic: str | None = None,
    alert_every: int = 0,
    stop: asyncio.Event | None = None,
    seed: int = 0,
    limit: int | None = None,
    producer_options: dict[str, Any] | None = None,
) -> SimulatorReport:
    """Produce the fleet's positions to `topic` at about `rate` records/s.

    Vehicles report in turn, each record keyed by its device id.  With
    `alerts_topic` set and `alert_every` > 0, every `alert_every`-th position
    is followed by an alert from the same vehicle.  Runs until `stop` is set,
    `duration` seconds have passed or `limit` positions were sent, whichever
    comes first; with none of them, forever.

    A broker that is down or goes away is retried with capped, jittered
    exponential backoff; the rate never exceeds `rate`, even after an outage.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if alert_every < 0:
        raise ValueError("alert_every must not be negative")
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    deadline = loop.time() + duration if duration is not None else None
    fleet = FleetSimulator(devices, seed)
    progress = _Progress()
    options: dict[str, Any] = {"linger_ms": 5, "request_timeout_ms": 5_000, "acks": 1}
    options.update(producer_options or {})

    def finished() -> bool:
        return (
            stop.is_set()
            or (deadline is not None and loop.time() >= deadline)
            or (limit is not None and progress.scheduled >= limit)
        )

    async def pause(seconds: float) -> None:
        """Sleep, but wake up as soon as the run should end."""
        if deadline is not None:
            seconds = min(seconds, deadline - loop.time())
        if seconds > 0:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                pass

    async def produce_until_finished(producer: AIOKafkaProducer) -> None:
        tokens, last = 1.0, loop.time()
        burst = max(1.0, rate * _BURST_S)
        while not finished():
            now_mono = loop.time()
            tokens = min(burst, tokens + (now_mono - last) * rate)
            last = now_mono
            count = int(tokens)
            if limit is not None:
                count = min(count, limit - progress.scheduled)
            if count:
                tokens -= count
                await send_tick(producer, count)
            await pause(max(_TICK_S, (1.0 - tokens) / rate))

    async def send_tick(producer: AIOKafkaProducer, count: int) -> None:
        which = [(progress.next_vehicle + i) % devices for i in range(count)]
        progress.next_vehicle = (progress.next_vehicle + count) % devices
        now = time.time()
        positions: list[asyncio.Future[Any]] = []
        alerts: list[asyncio.Future[Any]] = []
        errors: list[BaseException] = []
        try:
            for index, (device_id, value) in zip(which, fleet.step(now, which)):
                positions.append(await producer.send(topic, value, key=device_id.encode()))
                progress.scheduled += 1
                if alerts_topic and alert_every and progress.scheduled % alert_every == 0:
                    alert_id, alert = fleet.alert(now, index)
                    alerts.append(await producer.send(alerts_topic, alert, key=alert_id.encode()))
        except KafkaError as exc:  # e.g. no metadata for the topic in time
            errors.append(exc)
        # Waiting for the acks of each tick is the back-pressure, and tells a
        # lost broker from a slow one within request_timeout_ms.
        results = await asyncio.gather(*positions, *alerts, return_exceptions=True)
        acked = [not isinstance(result, BaseException) for result in results]
        progress.positions += sum(acked[: len(positions)])
        progress.alerts += sum(acked[len(positions) :])
        errors += [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]
        progress.failures = 0

    async def one_connection() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
        try:
            await producer.start()
            await produce_until_finished(producer)
        finally:
            await producer.stop()

    def backoff(_state: RetryCallState) -> float:
        # Counted from the last records that went through, so that every
        # outage starts again with a short wait.
        exponential = _BACKOFF_FIRST_S * 2 ** min(progress.failures, 16)
        return min(_BACKOFF_MAX_S, exponential) + random.uniform(0.0, _BACKOFF_JITTER_S)

    def note_reconnect(state: RetryCallState) -> None:
        progress.reconnects += 1
        progress.failures += 1
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "simulator lost the broker at %s (%s); retrying in %.2fs",
            bootstrap,
            error,
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
        wait=backoff,
        stop=lambda _state: finished(),
        sleep=pause,
        before_sleep=note_reconnect,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                await one_connection()
    except (TimeoutError, KafkaError, OSError):
        if not finished():
            raise
    return SimulatorReport(progress.positions, progress.alerts, progress.reconnects)
