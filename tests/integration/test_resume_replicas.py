"""Nothing lost at the last hop: clients resume exactly on whichever replica they land.

Two replicas with one identical environment behind a real nginx read a 3-partition positions
topic and an alerts topic while records keep coming. Clients keep the last ``id`` they saw and
reconnect with it whenever their connection ends. Whatever happens to the connections (a replica
SIGKILLed, clients dropping in every way), every client must have received, over the whole run,
exactly the records of its devices: none missing, none twice, each device in order.

The replica kill runs at the scale of the issue (200 clients of 10 devices, ~500 records/s);
the figures asked for are printed (run with ``-s``). The latency target is printed, not asserted:
on a shared machine a bound that tight measures the machine.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from support.background import Background
from support.binaries import require_program
from support.nginx import Nginx
from support.status import stats, wait_ready, wait_stats
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from siscom.core import cursors

pytestmark = pytest.mark.nginx

DEVICE_COUNT = 60
DEVICES = [f"v{n:03d}" for n in range(DEVICE_COUNT)]
PARTITIONS = 3


def partition_of(device: str) -> int:
    return int(device[1:]) % PARTITIONS


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    binary = require_program("nginx", "nginx-light")
    started: list[Nginx] = []

    def start(upstreams: list[str]) -> Nginx:
        directory = tmp_path / f"nginx-{len(started)}"
        directory.mkdir()
        proxy = Nginx(binary, directory, upstreams)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


class Traffic:
    """Positions of every device (and now and then an alert) at a steady rate, with the produce
    time in each record; remembers what was written."""

    def __init__(self, bootstrap: str, topic: str, alerts: str, rate: float, devices: list[str] = DEVICES) -> None:
        self.bootstrap, self.topic, self.alerts, self.rate = bootstrap, topic, alerts, rate
        self.devices = devices
        self.written: dict[str, list[tuple[str, int]]] = {device: [] for device in devices}
        #: seq -> (partition, offset), to explain a failure.
        self.placed: dict[int, tuple[int, int]] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Traffic:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await self._producer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self._producer.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def sent_rate(self) -> float:
        """Records per second actually written (the pace slips when the machine is busy)."""
        return self._sent / max(1e-9, self._ended - self._started)

    async def _run(self) -> None:
        seq = 0
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        loop = asyncio.get_running_loop()
        self._started = self._ended = next_tick = loop.time()
        self._sent = 0
        while not self._stop.is_set():
            futures = []
            for _ in range(per_tick):
                device = self.devices[seq % len(self.devices)]
                alert = seq % 40 == 7
                value = json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "T": time.time()}}).encode()
                topic = self.alerts if alert else self.topic
                futures.append(
                    await self._producer.send(topic, value, partition=partition_of(device) if not alert else 0)
                )
                self.written[device].append(("alert" if alert else "message", seq))
                seq += 1
            for meta, written in zip(await asyncio.gather(*futures), range(seq - len(futures), seq)):
                self.placed[written] = (meta.partition if meta.topic == self.topic else -1, meta.offset)
            self._sent, self._ended = seq, loop.time()
            # Paced on the clock, so the time the writes take does not slow the rate.
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def close_when(stop: asyncio.Event, connection) -> None:
    await stop.wait()
    await connection.close()


class LoopLag(Background):
    """How late this test process's own event loop runs: its clients' latencies include it."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, lag)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.samples.append((time.time(), loop.time() - due))

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at <= end]


@dataclass
class Client:
    """A dashboard that keeps the last id it saw and resumes with it."""

    url: str
    devices: list[str]
    received: list[tuple[str, str, int]] = field(default_factory=list)
    resumed: list[dict] = field(default_factory=list)
    last_id: str | None = None
    #: (time the connection ended, time the client was caught up again) per reconnection.
    recoveries: list[tuple[float, float | None]] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (receive time, latency)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    #: Per connection: (frames received, how it ended), to tell what happened when one fails.
    connections: list[list[object]] = field(default_factory=list)
    drop: Callable[[object], str | None] | None = None
    #: How long to wait before reconnecting (seconds, uniform between the two).
    backoff: tuple[float, float] = (0.05, 0.3)

    def query(self) -> str:
        query = f"{self.url}?device_ids={','.join(self.devices)}"
        return query if self.last_id is None else f"{query}&cursor={self.last_id}"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.connections.append([0, "open", None if self.last_id is None else cursors.decode(self.last_id)[1]])
                async with connect(
                    self.query(), open_timeout=10, close_timeout=2, max_size=None, ping_interval=None
                ) as connection:
                    self.connected.set()
                    self.connections[-1][1] = await self._read(connection, stop)
            except (OSError, WebSocketException, TimeoutError) as error:
                self.connections[-1][1] = repr(error)[:80]
            if not stop.is_set():
                self.recoveries.append((time.time(), None))
                await asyncio.sleep(random.uniform(*self.backoff))  # reconnect backoff with jitter

    async def _read(self, connection, stop: asyncio.Event) -> str:
        # Closed when the run stops: no timeout per frame (a timer per frame for 200 clients
        # costs the test process more than the frames themselves).
        closer = asyncio.create_task(close_when(stop, connection))
        try:
            async for text in connection:
                self.connections[-1][0] += 1
                now = time.time()
                frame = json.loads(text)
                if frame["event"] == "resumed":
                    self.resumed.append(frame["data"])
                    continue
                if "id" in frame:
                    self.last_id = frame["id"]
                if frame["event"] in ("message", "alert"):
                    data = frame["data"]["data"]
                    self.received.append((frame["event"], data["DEVICE_ID"], data["SEQ"]))
                    latency = now - data["T"]
                    self.latencies.append((now, latency))
                    if self.recoveries and self.recoveries[-1][1] is None and latency < 0.5:
                        self.recoveries[-1] = (self.recoveries[-1][0], now)
                if self.drop is not None and (way := self.drop(connection)):
                    return f"dropped: {way}"
        except ConnectionClosed as closed:
            return repr(closed)[:80]
        finally:
            closer.cancel()
        return "stopped" if stop.is_set() else f"closed {connection.close_code}"


def check_exact(client: Client, written: dict[str, list[tuple[str, int]]], placed=None) -> None:
    expected = sorted((event, device, seq) for device in client.devices for event, seq in written[device])
    got = client.received
    twice = len(got) - len(set(got))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert twice == 0 and not missing and sorted(got) == expected, (
        f"client {client.devices[0]}..: {len(missing)} missing (first {missing[:5]}), {twice} twice, "
        f"{len(extra)} unexpected (first {extra[:5]}), at {[placed.get(m[2]) for m in missing[:8]] if placed else ''} "
        f"resumed {client.resumed}, connections {client.connections}"
    )
    # Log order per partition: a device's positions share one partition, alerts another (the
    # two topics' records have no order between them).
    for device in client.devices:
        for event in ("message", "alert"):
            sequence = [seq for e, d, seq in got if d == device and e == event]
            assert sequence == sorted(sequence), f"{device} {event}s out of order"


@asynccontextmanager
async def running(clients: list[Client]) -> AsyncIterator[None]:
    """Each client runs (and reconnects as it is told) until the block ends; then all stop."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def all_delivered(
    clients: list[Client], written: dict[str, list[tuple[str, int]]], timeout: float = 15.0
) -> None:
    """Until every client holds as many records as were written for its devices (``timeout`` at
    most: check_exact then says what is missing), and half a second more: anything sent twice
    would arrive by then. A fixed wait had to be long enough for the slowest run."""
    deadline = time.monotonic() + timeout
    owed = [(client, sum(len(written[device]) for device in client.devices)) for client in clients]
    while any(len(client.received) < count for client, count in owed) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def two_replicas(
    server_factory, nginx_factory, bootstrap: str, topic: str, alerts: str, *, keepalive: float
) -> tuple[list, Nginx]:
    """Two replicas with one identical environment, ready, behind one nginx."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_ALERTS_TOPIC": alerts,
        "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "STREAM_KEEPALIVE_SECONDS": str(keepalive),
        "LOG_LEVEL": "WARNING",
    }
    servers = [server_factory(env), server_factory(env)]
    for server in servers:
        await wait_ready(server)
    return servers, nginx_factory([f"127.0.0.1:{server.port}" for server in servers])


#: The replica-kill test at the issue's scale: 200 dashboards of 10 vehicles each, ~500 records/s.
KILL_CLIENTS = 200
KILL_RATE = 500
#: Each vehicle on about 5 dashboards (a client's 10 vehicles are consecutive, clients overlap).
KILL_DEVICES = [f"v{n:03d}" for n in range(400)]
#: The issue's target for the survivor's other clients during the storm. A bound that tight fails
#: on a shared test machine, so it is printed, and only a loose canary is asserted.
STORM_P99_TARGET = 0.250
STORM_P99_CANARY = 2.0


@pytest.mark.timeout(240)
async def test_when_a_replica_is_killed_its_clients_resume_exactly_on_the_survivor(
    server_factory, broker, topic_factory, nginx_factory
):
    topic = await topic_factory(partitions=PARTITIONS)
    alerts = await topic_factory(prefix="alerts")
    servers, proxy = await two_replicas(server_factory, nginx_factory, broker.bootstrap, topic, alerts, keepalive=1)
    clients = [
        Client(proxy.ws_url(), [KILL_DEVICES[(n * 2 + k) % len(KILL_DEVICES)] for k in range(10)])
        for n in range(KILL_CLIENTS)
    ]
    async with running(clients):
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.connected.wait() for client in clients))
        await wait_stats(servers[0], lambda s: s["connections"] > 0)
        async with (
            LoopLag() as harness,
            Traffic(broker.bootstrap, topic, alerts, rate=KILL_RATE, devices=KILL_DEVICES) as traffic,
        ):
            await asyncio.sleep(4)
            victim, survivor = servers
            on_victim = stats(victim)["connections"]
            killed_at = time.time()
            victim.kill()
            await asyncio.sleep(5)
        await wait_stats(survivor, lambda s: s["records"] >= sum(map(len, traffic.written.values())), timeout=20)
        await all_delivered(clients, traffic.written)
    affected = [client for client in clients if client.recoveries]
    assert len(affected) == on_victim > 0
    for client in clients:
        check_exact(client, traffic.written)
    for client in affected:
        assert client.resumed and all(data == {"recovered": True} for data in client.resumed), client.resumed
    caught_up = [end - start for client in affected for start, end in client.recoveries if end is not None]
    assert len(caught_up) == len(affected)
    storm_end = max(end for client in affected for _, end in client.recoveries if end is not None)
    others = [
        latency
        for client in clients
        if not client.recoveries
        for at, latency in client.latencies
        if killed_at <= at <= max(storm_end, killed_at + 2)
    ]
    counters = stats(survivor)
    assert counters["history_reads_by_partition"] == {}, "a storm of recent cursors is served from the window"
    storm_p99 = percentile(others, 0.99)
    harness_lag = percentile(harness.between(killed_at, max(storm_end, killed_at + 2)), 0.99)
    print(
        f"\n{len(clients)} clients x 10 devices, {traffic.sent_rate:.0f} records/s written over "
        f"{PARTITIONS}+1 partitions; {len(affected)} clients on the killed replica resumed, all recovered; "
        f"resume-to-caught-up p50 {percentile(caught_up, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(caught_up, 0.99) * 1000:.0f} ms; survivor's other clients during the storm "
        f"({storm_end - killed_at:.1f} s from the kill to the last client caught up): "
        f"p99 latency {storm_p99 * 1000:.0f} ms over {len(others)} frames "
        f"(target {STORM_P99_TARGET * 1000:.0f} ms: {'met' if storm_p99 <= STORM_P99_TARGET else 'MISSED'}), "
        f"of which the test process's own event-loop lag p99 {harness_lag * 1000:.0f} ms; "
        f"survivor replayed {counters['replayed_records']} records, log reads {counters['history_reads_by_partition']}"
    )
    assert storm_p99 <= STORM_P99_CANARY, "far above the target: something blocks live delivery"


def reset(connection) -> None:
    """Close the client's TCP connection with RST (SO_LINGER 0), as a network that drops it."""
    transport = connection.transport
    if transport.is_closing():
        return  # closed meanwhile: its descriptor may already belong to a new connection
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@pytest.mark.timeout(240)
async def test_clients_dropping_at_random_in_every_way_resume_exactly(server_factory, broker, topic_factory):
    topic = await topic_factory(partitions=PARTITIONS)
    alerts = await topic_factory(prefix="alerts")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_ALERTS_TOPIC": alerts,
        "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "STREAM_KEEPALIVE_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
        "STREAM_SEND_TIMEOUT_SECONDS": "2",
        "STREAM_CLOSE_LINGER_SECONDS": "1",
    }
    server = server_factory(env)
    await wait_ready(server)
    rng = random.Random(10)
    cycles: dict[int, int] = {}

    def dropper(number: int) -> Callable[[object], str | None]:
        def drop(connection) -> str | None:
            if cycles.get(number, 0) >= 10 or rng.random() > 0.03:
                return None
            cycles[number] = cycles.get(number, 0) + 1
            way = rng.choice(("close", "reset", "stall"))
            if way == "close":
                pass  # leaving the connection's block closes it cleanly
            elif way == "reset":
                reset(connection)
            else:  # stop reading for a while, then drop
                connection.transport.pause_reading()
                asyncio.get_running_loop().call_later(1.0, reset, connection)
            return way

        return drop

    clients = [Client(server.ws_url(), [DEVICES[(n * 7 + k) % DEVICE_COUNT] for k in range(10)]) for n in range(50)]
    for number, client in enumerate(clients):
        client.drop = dropper(number)
    async with running(clients):
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.connected.wait() for client in clients))
        async with Traffic(broker.bootstrap, topic, alerts, rate=200) as traffic:
            deadline = time.monotonic() + 60
            while sum(cycles.values()) < 10 * len(clients) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        await wait_stats(server, lambda s: s["records"] >= sum(map(len, traffic.written.values())), timeout=20)
        await all_delivered(clients, traffic.written)
    for client in clients:
        check_exact(client, traffic.written, traffic.placed)
        assert all(data == {"recovered": True} for data in client.resumed), client.resumed
    counters = stats(server)
    print(
        f"\n{sum(cycles.values())} drops over {len(clients)} clients; every client exact; "
        f"resumes recovered {counters['resumes_recovered']}, not {counters.get('resumes_not_recovered', 0)}"
    )


async def produce_records(
    bootstrap: str, topic: str, seqs: range, *, alerts: bool = False
) -> dict[str, list[tuple[str, int]]]:
    """One record per number, device ``seq % 60``: positions each device on its partition,
    alerts on partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    written: dict[str, list[tuple[str, int]]] = {device: [] for device in DEVICES}
    try:
        futures = []
        for seq in seqs:
            device = DEVICES[seq % DEVICE_COUNT]
            value = json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "T": time.time()}}).encode()
            futures.append(await producer.send(topic, value, partition=0 if alerts else partition_of(device)))
            written[device].append(("alert" if alerts else "message", seq))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return written


@pytest.mark.timeout(180)
async def test_a_hundred_clients_asking_for_the_same_span_at_once_share_a_few_reads_of_the_log(
    server_factory, broker, topic_factory
):
    topic = await topic_factory(partitions=PARTITIONS)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "LOG_LEVEL": "WARNING",
        "STREAM_SNAPSHOT": "false",
        # A window too small for the span: the replays must come from the log.
        "STREAM_REPLAY_WINDOW_RECORDS": "10",
    }
    server = server_factory(env)
    await wait_ready(server)
    await produce_records(broker.bootstrap, topic, range(0, 600))  # before the span
    await wait_stats(server, lambda s: s["records"] >= 600)
    await asyncio.sleep(0.1)
    since = int(time.time() * 1000)
    span = await produce_records(broker.bootstrap, topic, range(600, 1800))
    await wait_stats(server, lambda s: s["records"] >= 1800)
    clients = [Client(server.ws_url(), [DEVICES[(n * 7 + k) % DEVICE_COUNT] for k in range(10)]) for n in range(100)]

    class SinceClient(Client):
        def query(self) -> str:
            return f"{self.url}?device_ids={','.join(self.devices)}&since={since}"

    clients = [SinceClient(client.url, client.devices) for client in clients]
    async with running(clients):
        async with asyncio.timeout(60):
            await asyncio.gather(*(client.connected.wait() for client in clients))
            while sum(len(client.received) for client in clients) < 100 * 200:
                await asyncio.sleep(0.2)
        live = await produce_records(broker.bootstrap, topic, range(1800, 1920))
        written = {device: span[device] + live[device] for device in DEVICES}
        await all_delivered(clients, written)
    for client in clients:
        assert client.resumed == [{"recovered": True}] and len(client.connections) == 1
        check_exact(client, written)
    reads = stats(server)["history_reads_by_partition"]
    assert set(reads) == {f"{topic}[{p}]" for p in range(PARTITIONS)}
    # A round reads each partition once for every request that came before it started; how many
    # rounds 100 connects straddle depends on how fast they come (5 on a quiet machine, 6 seen on
    # a loaded one). Without sharing it would be one read per client: 100.
    assert max(reads.values()) <= 10, reads
    print(
        "\n100 clients x 10 devices replaying the same 1,200-record span from the log: "
        f"reads per partition {sorted(reads.values())}"
    )


def merged(*parts: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
    return {device: [item for part in parts for item in part[device]] for device in DEVICES}


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_clients_of_an_idle_topic_resume_exactly_on_the_survivor_with_the_cursor_of_their_pings(
    server_factory, broker, topic_factory, nginx_factory
):
    """Before a partition has had a record, the cursor must name where reading it starts: that
    offset means the same on every replica, so a client that got nothing but pings resumes
    exactly elsewhere. The victim's clients stay away for a second or more while records are
    written; only a resume can give those to them."""
    topic = await topic_factory(partitions=PARTITIONS)
    alerts = await topic_factory(prefix="alerts")
    # Written before the replicas start, one record per request (the test broker reports the
    # log end of a partition written in multi-record batches too early): reading starts past
    # them, at offsets that are not 0.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for seq in range(90):
            await producer.send_and_wait(topic, b'{"data":{"DEVICE_ID":"earlier"}}', partition=seq % PARTITIONS)
    finally:
        await producer.stop()
    servers, proxy = await two_replicas(server_factory, nginx_factory, broker.bootstrap, topic, alerts, keepalive=0.3)
    clients = [
        Client(proxy.ws_url(), [DEVICES[(n * 7 + k) % DEVICE_COUNT] for k in range(10)], backoff=(1.0, 1.5))
        for n in range(20)
    ]
    async with running(clients):
        await wait_for(lambda: all(client.last_id for client in clients), 15, "every client has a ping's cursor")
        assert all(not client.received for client in clients)
        assert {cursors.decode(client.last_id)[1] for client in clients} == {((30, 30, 30), (0,))}
        victim, survivor = servers
        on_victim = stats(victim)["connections"]
        assert on_victim > 0
        victim.kill()
        meanwhile = merged(
            await produce_records(broker.bootstrap, topic, range(90, 150)),
            await produce_records(broker.bootstrap, alerts, range(150, 156), alerts=True),
        )
        affected = [client for client in clients if client.recoveries]
        await wait_for(lambda: all(client.resumed for client in affected), 20, "the victim's clients resumed")
        later = await produce_records(broker.bootstrap, topic, range(156, 180))
        await wait_stats(survivor, lambda s: s["records"] >= 180 - 90, timeout=20)
        written = merged(meanwhile, later)
        await all_delivered(clients, written)
    assert len(affected) == on_victim
    for client in affected:
        assert client.resumed == [{"recovered": True}], client.resumed
    for client in clients:
        check_exact(client, written)
    assert stats(survivor)["history_reads_by_partition"] == {}, "served from the window"
