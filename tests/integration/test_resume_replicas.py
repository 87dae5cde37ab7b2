"""Nothing lost at the last hop: clients resume exactly on whichever replica they land.

Two replicas with one identical environment behind a real nginx read a 3-partition positions
topic and an alerts topic while records keep coming. Clients keep the last ``id`` they saw and
reconnect with it whenever their connection ends. Whatever happens to the connections (a replica
SIGKILLed, clients dropping in every way), every client must have received, over the whole run,
exactly the records of its devices: none missing, none twice, each device in order.

The load is scaled to what a shared two-core machine runs inside the test suite; the figures
asked for are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from siscom.core import cursors
from support.binaries import require_program
from support.nginx import Nginx
from support.status import stats, wait_ready, wait_stats

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

    def __init__(self, bootstrap: str, topic: str, alerts: str, rate: float) -> None:
        self.bootstrap, self.topic, self.alerts, self.rate = bootstrap, topic, alerts, rate
        self.written: dict[str, list[tuple[str, int]]] = {device: [] for device in DEVICES}
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

    async def _run(self) -> None:
        seq = 0
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        while not self._stop.is_set():
            futures = []
            for _ in range(per_tick):
                device = DEVICES[seq % DEVICE_COUNT]
                alert = seq % 40 == 7
                value = json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "T": time.time()}}).encode()
                topic = self.alerts if alert else self.topic
                futures.append(await self._producer.send(topic, value, partition=partition_of(device) if not alert else 0))
                self.written[device].append(("alert" if alert else "message", seq))
                seq += 1
            for meta, written in zip(await asyncio.gather(*futures), range(seq - len(futures), seq)):
                self.placed[written] = (meta.partition if meta.topic == self.topic else -1, meta.offset)
            await asyncio.sleep(tick)


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

    def query(self) -> str:
        query = f"{self.url}?device_ids={','.join(self.devices)}"
        return query if self.last_id is None else f"{query}&cursor={self.last_id}"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.connections.append([0, "open", None if self.last_id is None else cursors.decode(self.last_id)[1]])
                async with connect(self.query(), open_timeout=10, close_timeout=2, max_size=None, ping_interval=None) as connection:
                    self.connected.set()
                    self.connections[-1][1] = await self._read(connection, stop)
            except (OSError, WebSocketException, TimeoutError) as error:
                self.connections[-1][1] = repr(error)[:80]
            if not stop.is_set():
                self.recoveries.append((time.time(), None))
                await asyncio.sleep(random.uniform(0.05, 0.3))  # reconnect backoff with jitter

    async def _read(self, connection, stop: asyncio.Event) -> str:
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(connection.recv(), 0.5)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                return repr(closed)[:80]
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
        return "stopped"


async def wait_cursors_know_every_partition(server, bootstrap: str, topics: dict[str, int], timeout: float = 15.0) -> None:
    """Write one record of a device no client watches to every partition, then wait until the
    server's pings carry a cursor that names an offset on every partition.

    A partition enters the cursor with the first batch the gateway reads after it was placed;
    until then a cursor handed out marks it unknown and cannot be honoured (``recovered: false``,
    see the README's Cursors section). Exactness is promised from there on.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        value = json.dumps({"data": {"DEVICE_ID": "probe", "SEQ": 0, "T": time.time()}}).encode()
        for topic, partitions in topics.items():
            for partition in range(partitions):
                await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with connect(server.ws_url("/api/v1/stream?device_ids=probe")) as probe:
            frame = json.loads(await asyncio.wait_for(probe.recv(), timeout))
        if frame.get("id"):
            _, vector = cursors.decode(frame["id"])
            if all(offset != cursors.UNKNOWN for offsets in vector for offset in offsets):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the server's cursors did not name every partition within {timeout} s")


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


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@pytest.mark.timeout(240)
async def test_when_a_replica_is_killed_its_clients_resume_exactly_on_the_survivor(
    server_factory, broker, topic_factory, nginx_factory
):
    topic = await topic_factory(partitions=PARTITIONS)
    alerts = await topic_factory(prefix="alerts")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_ALERTS_TOPIC": alerts,
        "KAFKA_FETCH_MAX_WAIT_MS": "10", "STREAM_KEEPALIVE_SECONDS": "1", "LOG_LEVEL": "WARNING",
    }
    servers = [server_factory(env), server_factory(env)]
    for server in servers:
        await wait_ready(server)
    proxy = nginx_factory([f"127.0.0.1:{server.port}" for server in servers])
    clients = [
        Client(proxy.ws_url(), [DEVICES[(n * 7 + k) % DEVICE_COUNT] for k in range(10)]) for n in range(80)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.connected.wait() for client in clients))
        await wait_stats(servers[0], lambda s: s["connections"] > 0)
        async with Traffic(broker.bootstrap, topic, alerts, rate=300) as traffic:
            await asyncio.sleep(4)
            victim, survivor = servers
            on_victim = stats(victim)["connections"]
            killed_at = time.time()
            victim.kill()
            await asyncio.sleep(6)
        await wait_stats(survivor, lambda s: s["records"] >= sum(map(len, traffic.written.values())), timeout=20)
        await asyncio.sleep(1.5)  # the last frames reach the clients
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    affected = [client for client in clients if client.recoveries]
    assert len(affected) == on_victim > 0
    for client in clients:
        check_exact(client, traffic.written)
    for client in affected:
        assert client.resumed and all(data == {"recovered": True} for data in client.resumed), client.resumed
    caught_up = [end - start for client in affected for start, end in client.recoveries if end is not None]
    assert len(caught_up) == len(affected)
    others = [
        latency for client in clients if not client.recoveries
        for at, latency in client.latencies if killed_at <= at <= killed_at + 5
    ]
    counters = stats(survivor)
    assert counters["history_reads_by_partition"] == {}, "a storm of recent cursors is served from the window"
    print(
        f"\n{len(clients)} clients x 10 devices, ~300 records/s over {PARTITIONS}+1 partitions; "
        f"{len(affected)} clients on the killed replica resumed, all recovered; "
        f"resume-to-caught-up p50 {percentile(caught_up, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(caught_up, 0.99) * 1000:.0f} ms; survivor's other clients during the storm: "
        f"p99 latency {percentile(others, 0.99) * 1000:.0f} ms ({len(others)} frames); "
        f"survivor replayed {counters['replayed_records']} records, log reads {counters['history_reads_by_partition']}"
    )


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
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_ALERTS_TOPIC": alerts,
        "KAFKA_FETCH_MAX_WAIT_MS": "10", "STREAM_KEEPALIVE_SECONDS": "1", "LOG_LEVEL": "WARNING",
        "STREAM_SEND_TIMEOUT_SECONDS": "2", "STREAM_CLOSE_LINGER_SECONDS": "1",
    }
    server = server_factory(env)
    await wait_ready(server)
    await wait_cursors_know_every_partition(server, broker.bootstrap, {topic: PARTITIONS, alerts: 1})
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
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.connected.wait() for client in clients))
        async with Traffic(broker.bootstrap, topic, alerts, rate=200) as traffic:
            deadline = time.monotonic() + 60
            while sum(cycles.values()) < 10 * len(clients) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        await wait_stats(server, lambda s: s["records"] >= sum(map(len, traffic.written.values())), timeout=20)
        await asyncio.sleep(2.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for client in clients:
        check_exact(client, traffic.written, traffic.placed)
        assert all(data == {"recovered": True} for data in client.resumed), client.resumed
    counters = stats(server)
    print(
        f"\n{sum(cycles.values())} drops over {len(clients)} clients; every client exact; "
        f"resumes recovered {counters['resumes_recovered']}, not {counters.get('resumes_not_recovered', 0)}"
    )


async def produce_records(bootstrap: str, topic: str, seqs: range) -> dict[str, list[tuple[str, int]]]:
    """One position per number, device ``seq % 60``, each device on its partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    written: dict[str, list[tuple[str, int]]] = {device: [] for device in DEVICES}
    try:
        futures = []
        for seq in seqs:
            device = DEVICES[seq % DEVICE_COUNT]
            value = json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "T": time.time()}}).encode()
            futures.append(await producer.send(topic, value, partition=partition_of(device)))
            written[device].append(("message", seq))
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
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "LOG_LEVEL": "WARNING", "STREAM_SNAPSHOT": "false",
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
    clients = [
        Client(server.ws_url(), [DEVICES[(n * 7 + k) % DEVICE_COUNT] for k in range(10)]) for n in range(100)
    ]
    stop = asyncio.Event()

    class SinceClient(Client):
        def query(self) -> str:
            return f"{self.url}?device_ids={','.join(self.devices)}&since={since}"

    clients = [SinceClient(client.url, client.devices) for client in clients]
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(client.connected.wait() for client in clients))
            while sum(len(client.received) for client in clients) < 100 * 200:
                await asyncio.sleep(0.2)
        live = await produce_records(broker.bootstrap, topic, range(1800, 1920))
        await asyncio.sleep(2)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    written = {device: span[device] + live[device] for device in DEVICES}
    for client in clients:
        assert client.resumed == [{"recovered": True}] and len(client.connections) == 1
        check_exact(client, written)
    reads = stats(server)["history_reads_by_partition"]
    assert set(reads) == {f"{topic}[{p}]" for p in range(PARTITIONS)}
    assert max(reads.values()) <= 5, reads
    print(f"\n100 clients x 10 devices replaying the same 1,200-record span from the log: reads per partition {sorted(reads.values())}")
