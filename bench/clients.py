"""Many stream clients, spread over several processes, that time every frame they receive.

Each client process runs an event loop with a share of the clients (bare protocol objects from
:mod:`bench.wsclient`, or :mod:`bench.sseclient` for the stream over Server-Sent Events) and
answers the harness over a pipe: it says when its clients are connected, reports what they
received in a time window, and closes them when asked.

What a client records per position frame is two numbers: the producer's timestamp carried in
the record (``metadata.producer_ts_ms``) and how old the record was when the frame arrived. It
finds the timestamp with a byte search rather than a JSON parse, so a client costs a few
microseconds per frame and a few processes keep up with a server on the same cores.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from urllib.parse import quote

from bench import sseclient, wsclient
from bench.stats import percentile
from siscom.core.geo import BBox

STREAM_PATH = "/api/v1/stream"
#: How each transport opens a stream; both clients hand every frame's text to a Recorder.
OPENERS: dict[str, Callable[..., Awaitable[wsclient.StreamClient | sseclient.SseStreamClient]]] = {
    "websocket": wsclient.open_stream,
    "sse": sseclient.open_stream,
}
_STAMP = b'"producer_ts_ms":'
_MESSAGE = b'{"event":"message"'
_PING = b'{"event":"ping"'

#: A client's device list, or a map client's box; ``None`` subscribes to every device.
Subscription = tuple[str, ...] | BBox | None


def stream_path(devices: Subscription) -> str:
    if devices is None:
        return STREAM_PATH
    if isinstance(devices, BBox):
        return f"{STREAM_PATH}?bbox={devices.min_lon!r},{devices.min_lat!r},{devices.max_lon!r},{devices.max_lat!r}"
    return f"{STREAM_PATH}?device_ids={quote(','.join(devices), safe=',')}"


class Recorder:
    """What one client saw: a timestamp and an age per position frame, and its keep-alives.

    Anything else (a map client's ``leave`` frames, acks) is only counted, in ``others``."""

    __slots__ = ("stamps", "ages", "pings", "others", "close_code")

    def __init__(self) -> None:
        self.stamps = array("d")  # producer timestamps, ms since the epoch
        self.ages = array("f")  # arrival time minus producer timestamp, ms
        self.pings = array("d")  # arrival times of keep-alives, s since the epoch
        self.others = 0
        self.close_code: int | None = None

    def on_text(self, payload: bytes, arrived: float) -> None:
        if payload.startswith(_MESSAGE):
            start = payload.find(_STAMP)
            if start >= 0:
                start += len(_STAMP)
                stamp = int(payload[start : payload.find(b",", start)])
                self.stamps.append(stamp)
                self.ages.append(arrived * 1000.0 - stamp)
                return
        elif payload.startswith(_PING):
            self.pings.append(arrived)
            return
        self.others += 1

    def clear(self) -> None:
        self.stamps = array("d")
        self.ages = array("f")
        self.pings = array("d")
        self.others = 0


@dataclass
class ClientFigures:
    """One client's figures for a window, small enough to send back for every client."""

    received: int
    age_p99: float | None
    age_max: float | None
    pings: int
    max_ping_gap: float | None
    close_code: int | None


@dataclass
class ProcessReport:
    """What one client process saw in a window."""

    clients: list[ClientFigures]
    #: Every position frame of the window: producer timestamp (ms) and age (ms), as raw arrays.
    stamps: bytes
    ages: bytes
    others: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)
    #: How late the process's event loop ran a 5 ms timer in the window, ms, one per wake-up.
    loop_lags: bytes = b""
    #: How long after data reached a client's socket the client read it, ms, one per read.
    read_lags: bytes = b""
    #: Open streams by the protocol their client object speaks (what ran, not what was asked).
    transports: Counter[str] = field(default_factory=Counter)


#: The loop-lag probe's period. A frame that reaches a client's socket waits for the loop's
#: current turn to end before it is read and timed, so the probe's lateness is what the client
#: itself adds to the latency it measures.
LAG_PROBE_S = 0.005


class LoopLagProbe:
    """Wakes every :data:`LAG_PROBE_S` and records (wall time, lateness) of each wake-up."""

    def __init__(self) -> None:
        self.times = array("d")  # s since the epoch
        self.lags = array("f")  # ms
        #: Per read of any client: when it was read, and how long after the data had arrived (ms).
        self.read_times = array("d")
        self.read_lags = array("f")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        clock = time.monotonic
        while True:
            before = clock()
            await asyncio.sleep(LAG_PROBE_S)
            late = clock() - before - LAG_PROBE_S
            self.times.append(time.time())
            self.lags.append(max(late, 0.0) * 1000.0)

    def window(self, t0_ms: float, t1_ms: float, clear: bool) -> array:
        lags = array("f", (lag for at, lag in zip(self.times, self.lags) if t0_ms <= at * 1000.0 < t1_ms))
        if clear:
            self.times, self.lags = array("d"), array("f")
        return lags

    def read(self, arrived: float, read: float) -> None:
        """A client read data that reached its socket at ``arrived``: kept as a lag too."""
        self.read_times.append(read)
        self.read_lags.append((read - arrived) * 1000.0)

    def read_window(self, t0_ms: float, t1_ms: float, clear: bool) -> array:
        lags = array("f", (lag for at, lag in zip(self.read_times, self.read_lags) if t0_ms <= at * 1000.0 < t1_ms))
        if clear:
            self.read_times, self.read_lags = array("d"), array("f")
        return lags


def _window_figures(recorder: Recorder, t0_ms: float, t1_ms: float) -> tuple[ClientFigures, array, array]:
    stamps, ages = array("d"), array("f")
    for stamp, age in zip(recorder.stamps, recorder.ages):
        if t0_ms <= stamp < t1_ms:
            stamps.append(stamp)
            ages.append(age)
    ordered = sorted(ages)
    pings = [t for t in recorder.pings if t0_ms <= t * 1000.0 < t1_ms]
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
    figures = ClientFigures(
        received=len(stamps),
        age_p99=percentile(ordered, 99) if ordered else None,
        age_max=ordered[-1] if ordered else None,
        pings=len(pings),
        max_ping_gap=max(gaps) if gaps else None,
        close_code=recorder.close_code,
    )
    return figures, stamps, ages


@dataclass(frozen=True)
class Dialing:
    """How a client process opens its streams."""

    #: ``websocket`` or ``sse`` (a key of :data:`OPENERS`).
    transport: str = "websocket"
    #: Handshakes in flight at once.
    concurrency: int = 64
    #: Ask for permessage-deflate (WebSocket only).
    deflate: bool = False


async def _serve_parent(
    conn: Connection, host: str, port: int, subscriptions: Sequence[Subscription], dialing: Dialing
) -> None:
    loop = asyncio.get_running_loop()
    open_stream = OPENERS[dialing.transport]
    deflate = dialing.deflate
    recorders = [Recorder() for _ in subscriptions]
    clients: list[wsclient.StreamClient | sseclient.SseStreamClient | None] = [None] * len(subscriptions)
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(dialing.concurrency)

    async def connect(index: int) -> None:
        recorder = recorders[index]
        async with gate:
            try:
                client = await open_stream(
                    host, port, stream_path(subscriptions[index]), recorder.on_text, deflate=deflate, timeout=30.0
                )
            except (OSError, TimeoutError) as error:
                errors[type(error).__name__] += 1
                return
        clients[index] = client
        client.closed.add_done_callback(lambda done: setattr(recorder, "close_code", done.result()))

    await asyncio.gather(*(connect(index) for index in range(len(subscriptions))))
    probe = LoopLagProbe()
    probe.start()
    for client in clients:
        if isinstance(client, wsclient.StreamClient):  # an event stream's client times no reads
            client.on_read = probe.read
    conn.send(("connected", sum(client is not None for client in clients), dict(errors)))

    commands: asyncio.Queue[tuple] = asyncio.Queue()

    def reply(*message: object) -> None:
        # Watching the pipe made it non-blocking; a large report must be written whole.
        os.set_blocking(conn.fileno(), True)
        conn.send(message)

    def read_command() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):  # the harness went away: close and end
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("close", 1.0))

    loop.add_reader(conn.fileno(), read_command)
    while True:
        command, *args = await commands.get()
        if command == "report":
            t0_ms, t1_ms, clear = args
            report = ProcessReport(clients=[], stamps=b"", ages=b"")
            all_stamps, all_ages = array("d"), array("f")
            for recorder in recorders:
                figures, stamps, ages = _window_figures(recorder, t0_ms, t1_ms)
                report.clients.append(figures)
                all_stamps.extend(stamps)
                all_ages.extend(ages)
                report.others += recorder.others
                if recorder.close_code is not None:
                    report.close_codes[recorder.close_code] += 1
                if clear:
                    recorder.clear()
            report.stamps, report.ages = all_stamps.tobytes(), all_ages.tobytes()
            report.loop_lags = probe.window(t0_ms, t1_ms, clear).tobytes()
            report.read_lags = probe.read_window(t0_ms, t1_ms, clear).tobytes()
            report.transports = Counter(client.transport for client in clients if client is not None)
            reply("report", report)
        elif command == "close":
            (timeout,) = args
            probe.stop()
            open_clients = [client for client in clients if client is not None]
            for client in open_clients:
                client.close()
            pending = [client.closed for client in open_clients if not client.closed.done()]
            if pending:
                await asyncio.wait(pending, timeout=timeout)
            for client in open_clients:
                client.abort()
            codes = Counter(client.closed.result() for client in open_clients if client.closed.done())
            reply("closed", dict(codes))
            return


def _client_process(
    conn: Connection, host: str, port: int, subscriptions: Sequence[Subscription], dialing: Dialing
) -> None:
    # The harness stops us over the pipe; a Ctrl-C in the terminal is for the harness.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve_parent(conn, host, port, subscriptions, dialing))


@dataclass
class PoolReport:
    """Every client's figures for one window, merged over the processes."""

    clients: list[ClientFigures]
    subscriptions: list[Subscription]
    stamps: array
    ages: array
    others: int
    close_codes: Counter[int]
    #: Every client process's loop lateness in the window (see :class:`LoopLagProbe`), ms.
    loop_lags: array = field(default_factory=lambda: array("f"))
    #: How long after data reached a client's socket it was read (see LoopLagProbe.read), ms.
    read_lags: array = field(default_factory=lambda: array("f"))
    transports: Counter[str] = field(default_factory=Counter)


class ClientPool:
    """``subscriptions`` (one entry per client) dealt round-robin to ``processes`` processes.

    ``transport``: ``"websocket"`` or ``"sse"`` (a key of :data:`OPENERS`)."""

    def __init__(
        self,
        host: str,
        port: int,
        subscriptions: Sequence[Subscription],
        *,
        processes: int = 2,
        concurrency: int = 64,
        deflate: bool = False,
        transport: str = "websocket",
    ) -> None:
        if transport not in OPENERS:
            raise ValueError(f"transport {transport!r}: one of {', '.join(OPENERS)}")
        self.host, self.port = host, port
        processes = max(1, min(processes, len(subscriptions)))
        self._shares = [list(subscriptions[index::processes]) for index in range(processes)]
        self._dialing = Dialing(transport, concurrency, deflate)
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.connected = 0
        self.errors: Counter[str] = Counter()

    async def start(self, timeout: float = 120.0) -> int:
        """Start the processes and wait until every client connected or failed; returns how many connected."""
        for share in self._shares:
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=_client_process,
                args=(child, self.host, self.port, share, self._dialing),
                name="bench-clients",
                daemon=True,
            )
            process.start()
            child.close()
            self._workers.append((process, parent))
        for _, conn in self._workers:
            _, connected, errors = await self._receive(conn, "connected", timeout)
            self.connected += connected
            self.errors.update(errors)
        return self.connected

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._workers if process.pid is not None]

    async def report(self, t0_ms: float, t1_ms: float, *, clear: bool = True, timeout: float = 60.0) -> PoolReport:
        """Figures for frames whose records were produced in ``[t0_ms, t1_ms)``."""
        for _, conn in self._workers:
            conn.send(("report", t0_ms, t1_ms, clear))
        merged = PoolReport([], [], array("d"), array("f"), 0, Counter())
        for share, (_, conn) in zip(self._shares, self._workers):
            _, report = await self._receive(conn, "report", timeout)
            merged.clients += report.clients
            merged.subscriptions += share
            merged.stamps.frombytes(report.stamps)
            merged.ages.frombytes(report.ages)
            merged.others += report.others
            merged.close_codes.update(report.close_codes)
            merged.loop_lags.frombytes(report.loop_lags)
            merged.read_lags.frombytes(report.read_lags)
            merged.transports.update(report.transports)
        return merged

    async def stop(self, timeout: float = 10.0) -> Counter[int]:
        """Close every client (waiting up to ``timeout`` for the closing handshakes) and end the processes."""
        codes: Counter[int] = Counter()
        for process, conn in self._workers:
            if process.is_alive():
                try:
                    conn.send(("close", timeout))
                except OSError:
                    pass
        for _, conn in self._workers:
            try:
                _, closed = await self._receive(conn, "closed", timeout + 5.0)
                codes.update(closed)
            except (EOFError, OSError, TimeoutError):
                pass
        for process, conn in self._workers:
            await asyncio.to_thread(process.join, 5.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5.0)
            conn.close()
        self._workers.clear()
        return codes

    @staticmethod
    async def _receive(conn: Connection, expected: str, timeout: float) -> tuple:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(conn.poll, 0.2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {expected!r} from a client process within {timeout} s")
        message = conn.recv()
        if message[0] != expected:
            raise RuntimeError(f"client process sent {message[0]!r}, expected {expected!r}")
        return message
