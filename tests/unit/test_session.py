"""The session pump, driven through a fake transport: writes under a deadline, keep-alive timing,
timers and the close. What the stream decides (frames, subscriptions, grants) is tested without
I/O in test_stream_core.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from siscom.core.deliveries import Delivery
from siscom.core.protocol import CloseCode, alert_frame, message_frame
from siscom.core.stream import StreamCore
from siscom.core.subscriptions import SubscriptionTable
from siscom.metrics import Metrics
from siscom.security.tokens import Grant
from siscom.sessions.flusher import Flusher
from siscom.sessions.session import Session, SessionLimits
from siscom.sessions.transport import ClientGone, Transport

BOUND = 50


def limits(**changes) -> SessionLimits:
    values = dict(
        keepalive_seconds=60.0,
        send_timeout_seconds=5.0,
        max_pending_frames=BOUND,
        max_device_ids=10,
        snapshot=True,
        close_linger_seconds=0.2,
    )
    values.update(changes)
    return SessionLimits(**values)


class FakeTransport(Transport):
    """Keeps what the session sends. ``writable`` cleared makes writes stall, as a client that
    does not read does; ``closable`` cleared makes the close frame wait too. ``incoming`` is what
    the client sends (an exception in it is raised by ``receive``)."""

    peer = "192.0.2.1"

    def __init__(self) -> None:
        self.sent: list[str] = []
        #: The event-loop time of each frame sent.
        self.times: list[float] = []
        self.aborted = False
        self.closed: tuple[int, str] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closable = asyncio.Event()
        self.closable.set()
        self.incoming: asyncio.Queue[str | BaseException] = asyncio.Queue()

    async def send(self, text: str) -> None:
        await self.writable.wait()
        self.sent.append(text)
        self.times.append(asyncio.get_running_loop().time())

    async def receive(self) -> str:
        item = await self.incoming.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self, code: int, reason: str) -> None:
        await self.closable.wait()
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def frames(self) -> list[dict]:
        return [json.loads(text) for text in self.sent]

    def events(self) -> list[str]:
        return [frame["event"] for frame in self.frames()]


class Harness:
    def __init__(self, device_ids=frozenset({"a", "b"}), grant: Grant | None = None, **limit_changes) -> None:
        self.transport = FakeTransport()
        self.table = SubscriptionTable()
        self.metrics = Metrics()
        self.device_ids = device_ids
        self.limits = limits(**limit_changes)
        self.grant = grant
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None
        #: Reads what the client sends, as the route's task does (it ends with the session).
        self.listener: asyncio.Task[None] | None = None

    def start(self, flusher: Flusher | None = None, gate=None) -> Session:
        core = StreamCore(self.device_ids, table=self.table, policy=self.limits.policy, grant=self.grant)
        self.session = Session(
            self.transport,
            core,
            name="session-1",
            limits=self.limits,
            metrics=self.metrics,
            flusher=flusher,
            gate=gate,
        )
        self.task = asyncio.create_task(self.session.run())
        self.listener = asyncio.create_task(self.session.listen())
        return self.session

    async def until(self, condition, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)

    async def ended(self, timeout: float = 2.0) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


def position(device_id: str, n: int) -> Delivery:
    return Delivery(device_id, message_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n}})), False, 0)


def alert(device_id: str, n: int) -> Delivery:
    return Delivery(device_id, alert_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n}})), True, 0)


def numbers(transport: FakeTransport, event: str = "message") -> list[int]:
    return [frame["data"]["data"]["N"] for frame in transport.frames() if frame["event"] == event]


@pytest.fixture
async def harness():
    made: list[Harness] = []

    def make(**options) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    tasks = [task for h in made for task in (h.task, h.listener) if task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def test_keep_alives_are_sent_while_nothing_else_is(harness):
    h = harness(keepalive_seconds=0.05)
    h.start()
    await h.until(lambda: h.transport.events().count("ping") >= 3)
    assert h.transport.frames()[0] == {"event": "ping", "data": {"type": "keep-alive"}}


async def test_on_an_idle_stream_each_keep_alive_comes_about_one_interval_after_the_last(harness):
    """Proxies cut streams silent for longer than their read timeout, set just above the
    interval: pings must not come later than that (bounded at 1.5x here), nor early."""
    interval = 0.4
    h = harness(keepalive_seconds=interval, snapshot=False)
    opened = asyncio.get_running_loop().time()
    h.start()
    await h.until(lambda: len(h.transport.sent) >= 4, timeout=8 * interval)
    assert h.transport.events()[:4] == ["ping"] * 4
    times = [opened] + h.transport.times[:4]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    print(f"keep-alive interval {interval} s; gaps {[round(g, 3) for g in gaps]}")
    assert all(0.9 * interval <= gap <= 1.5 * interval for gap in gaps), gaps


async def test_a_new_session_gets_the_snapshot_first_then_live_frames_in_order(harness):
    h = harness()
    h.table.remember(position("a", 0))
    h.table.remember(position("z", 0))  # not subscribed
    session = h.start()
    await h.until(lambda: h.transport.sent)
    for n in range(1, 6):
        session.core.deliver(position("a", n), 0.0)
    await h.until(lambda: len(h.transport.sent) == 6)
    assert numbers(h.transport) == [0, 1, 2, 3, 4, 5]
    assert h.metrics.counters["frames_sent"] == 6


async def test_deliver_never_waits_and_a_stalled_client_gets_the_newest_position_per_device(harness):
    h = harness(snapshot=False)
    session = h.start()
    h.transport.writable.clear()
    session.core.deliver(position("a", -1), 0.0)
    await asyncio.sleep(0.01)  # that write is now stalled
    for n in range(10 * BOUND):  # synchronous: the router never waits for a client
        session.core.deliver(position("a", n), 0.0)
        session.core.deliver(position("b", n), 0.0)
    h.transport.writable.set()
    await h.until(lambda: numbers(h.transport)[-2:] == [10 * BOUND - 1] * 2)
    received = numbers(h.transport)
    assert len(received) < 10 * BOUND
    for device in "ab":
        mine = [f["data"]["data"]["N"] for f in h.transport.frames() if f["data"]["data"]["DEVICE_ID"] == device]
        assert mine == sorted(mine)  # conflated, never reordered
    assert h.metrics.counters["conflated"] == 2 * 10 * BOUND + 1 - len(received)


async def test_alerts_are_never_conflated_and_past_the_bound_the_client_is_closed_with_1013(harness):
    h = harness(snapshot=False)
    session = h.start()
    for n in range(BOUND):
        session.core.deliver(alert("a", n), 0.0)
    await h.until(lambda: len(h.transport.sent) == BOUND)
    assert numbers(h.transport, "alert") == list(range(BOUND))

    h.transport.writable.clear()
    session.core.deliver(alert("a", BOUND), 0.0)
    await asyncio.sleep(0.01)
    for n in range(BOUND + 1, 2 * BOUND + 2):
        session.core.deliver(alert("a", n), 0.0)
    await h.ended()
    assert h.transport.closed == (CloseCode.TRY_AGAIN_LATER, "client too slow")
    assert h.metrics.counters["slow_client_closes"] == 1
    assert len(h.table) == 0


async def test_a_write_stalled_past_the_send_timeout_closes_with_1013_and_is_counted(harness):
    h = harness(snapshot=False, send_timeout_seconds=0.1)
    session = h.start()
    h.transport.writable.clear()
    session.core.deliver(position("a", 1), 0.0)
    await asyncio.sleep(0.01)
    for n in range(3 * BOUND):
        session.core.deliver(position("a", n), 0.0)
    await h.ended()
    assert h.transport.closed == (CloseCode.TRY_AGAIN_LATER, "client too slow")
    assert h.metrics.counters["slow_client_closes"] == 1
    # The conflation of a client that never read again is counted all the same.
    assert h.metrics.counters["conflated"] >= BOUND
    assert session.finished.is_set()


async def test_closing_interrupts_a_stalled_write_at_once(harness):
    h = harness(snapshot=False, send_timeout_seconds=30.0)
    session = h.start()
    h.transport.writable.clear()
    session.core.deliver(position("a", 1), 0.0)
    await asyncio.sleep(0.01)  # that write is now stalled; the close frame is not
    session.close(CloseCode.GOING_AWAY, "server shutting down")
    await h.ended(timeout=1.0)
    assert h.transport.closed == (CloseCode.GOING_AWAY, "server shutting down")
    assert h.metrics.counters["slow_client_closes"] == 0


async def test_a_close_frame_stuck_behind_unread_data_does_not_keep_the_session(harness):
    h = harness(snapshot=False, send_timeout_seconds=0.05, close_timeout_seconds=0.05, close_linger_seconds=0.5)
    session = h.start()
    h.transport.writable.clear()
    h.transport.closable.clear()
    session.core.deliver(position("a", 1), 0.0)
    await h.ended()  # ended, although the close frame is still waiting
    assert h.transport.closed is None
    assert len(h.table) == 0
    assert h.metrics.counters["slow_client_closes"] == 1
    sent = asyncio.create_task(session.close_sent())
    await asyncio.sleep(0.05)
    assert not sent.done()  # the connection is kept for the close frame...
    h.transport.closable.set()  # ...which goes out once the client reads again
    await asyncio.wait_for(sent, 1.0)
    assert h.transport.closed == (CloseCode.TRY_AGAIN_LATER, "client too slow")
    assert not h.transport.aborted


async def test_a_close_frame_that_never_goes_out_is_given_up_and_the_connection_dropped_after_the_linger(harness):
    h = harness(snapshot=False, close_timeout_seconds=0.05, close_linger_seconds=0.1)
    session = h.start()
    h.transport.closable.clear()
    session.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
    await h.ended()
    assert not h.transport.aborted
    await asyncio.wait_for(session.close_sent(), 1.0)
    assert h.transport.closed is None
    assert h.transport.aborted


async def test_a_connection_whose_client_never_answers_the_close_is_dropped_after_the_linger(harness):
    h = harness(snapshot=False, close_linger_seconds=0.1)
    session = h.start()
    session.close(CloseCode.GOING_AWAY, "server shutting down")
    await h.ended()
    assert h.transport.closed == (CloseCode.GOING_AWAY, "server shutting down")
    await h.until(lambda: h.transport.aborted, timeout=1.0)


async def test_a_client_that_leaves_after_the_close_is_not_dropped(harness):
    h = harness(snapshot=False, close_linger_seconds=0.1)
    session = h.start()
    session.close(CloseCode.GOING_AWAY, "server shutting down")
    await h.ended()
    session.client_left()  # the client answered the close and went
    await asyncio.sleep(0.2)
    assert not h.transport.aborted


async def test_cancelling_the_session_tells_the_client_1001(harness):
    h = harness()
    h.start()
    await asyncio.sleep(0.01)
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.task
    assert h.transport.closed == (CloseCode.GOING_AWAY, "server shutting down")
    assert len(h.table) == 0


async def test_a_client_that_left_is_sent_no_close_frame(harness):
    h = harness()
    session = h.start()
    await asyncio.sleep(0.01)
    session.client_left()
    await h.ended()
    assert h.transport.closed is None
    assert h.metrics.counters["connections_closed"] == 1
    await asyncio.sleep(h.limits.close_linger_seconds)
    assert not h.transport.aborted  # a connection already gone is left alone


async def test_a_client_that_disconnects_while_the_session_reads_ends_it_quietly(harness):
    h = harness()
    h.start()
    await h.transport.incoming.put(ClientGone("gone"))
    await h.ended()
    assert h.transport.closed is None
    assert len(h.table) == 0


async def test_subscribe_and_unsubscribe_change_the_devices_and_are_acknowledged(harness):
    h = harness(device_ids=frozenset({"a"}), snapshot=True)
    h.table.remember(position("b", 0))
    session = h.start()
    await h.transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["b"]}))
    await h.until(lambda: len(h.transport.sent) == 2)
    assert h.transport.frames() == [
        {"event": "ack", "data": {"action": "subscribe", "device_ids": ["a", "b"]}},
        json.loads(position("b", 0).text),  # the snapshot of the device just added
    ]
    assert h.table.filter_of(session.core) == {"a", "b"}
    await h.transport.incoming.put(json.dumps({"action": "unsubscribe", "device_ids": ["a"]}))
    await h.until(lambda: len(h.transport.sent) == 3)
    assert h.transport.frames()[-1] == {"event": "ack", "data": {"action": "unsubscribe", "device_ids": ["b"]}}
    assert h.table.filter_of(session.core) == {"b"}


async def test_requests_that_cannot_be_granted_get_an_error_frame_and_the_stream_goes_on(harness):
    h = harness(device_ids=None)
    session = h.start()
    await h.transport.incoming.put(json.dumps({"action": "unsubscribe", "device_ids": ["a"]}))
    await h.transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": [f"d{n}" for n in range(11)]}))
    await h.transport.incoming.put("not a command")
    await h.until(lambda: len(h.transport.sent) == 2)
    assert h.transport.events() == ["error", "error"]
    assert "every device" in h.transport.frames()[0]["data"]["message"]
    session.core.deliver(position("q", 1), 0.0)
    await h.until(lambda: len(h.transport.sent) == 3)
    assert h.table.filter_of(session.core) is None


async def test_the_stream_closes_with_an_error_frame_and_1008_when_the_token_expires_and_it_is_counted(harness):
    h = harness(device_ids=frozenset({"bus-1"}), grant=Grant(frozenset({"bus-1"}), time.time() + 0.3), snapshot=False)
    session = h.start()
    await asyncio.sleep(0.1)
    assert not session.finished.is_set()
    await h.ended(timeout=3.0)
    assert h.transport.frames()[-1] == {"event": "error", "data": {"message": "token expired"}}
    assert h.transport.closed == (CloseCode.POLICY_VIOLATION, "token expired")
    assert h.metrics.counters["token_expiries"] == 1


async def test_a_token_that_expired_before_the_session_started_closes_it_at_once(harness):
    h = harness(device_ids=None, grant=Grant(None, time.time() - 1))
    h.start()
    await h.ended(timeout=1.0)
    assert h.transport.closed == (CloseCode.POLICY_VIOLATION, "token expired")


async def test_a_session_that_ends_first_leaves_no_expiry_timer_behind(harness):
    h = harness(device_ids=None, grant=Grant(None, time.time() + 0.2))
    session = h.start()
    await asyncio.sleep(0.01)
    session.close(CloseCode.NORMAL)
    await h.ended()
    await asyncio.sleep(0.4)
    assert h.metrics.counters["token_expiries"] == 0
    assert h.transport.closed == (CloseCode.NORMAL, "")


async def test_asking_for_devices_outside_the_grant_ends_the_stream_with_1008_and_is_counted(harness):
    h = harness(
        device_ids=frozenset({"bus-1"}), grant=Grant(frozenset({"bus-1", "bus-2"}), time.time() + 60), snapshot=False
    )
    h.start()
    await h.transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["car-9"]}))
    await h.ended()
    assert h.transport.events() == ["error"]
    assert h.transport.closed == (CloseCode.POLICY_VIOLATION, "device not allowed")
    assert h.metrics.counters["forbidden_requests"] == 1
    assert len(h.table) == 0


class FakeDirect:
    """Direct writes (siscom/web/server/coalesce.py) as the session sees them: ``ready`` cleared is a
    socket that would block; ``writes`` keeps each write's frames."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.is_ready = True

    def ready(self) -> bool:
        return self.is_ready

    def write(self, texts: list[str]) -> None:
        assert self.is_ready, "wrote to a socket that would block"
        self.writes.append(list(texts))


def with_direct(h: Harness) -> FakeDirect:
    h.transport.direct = FakeDirect()
    return h.transport.direct


async def test_frames_routed_in_one_turn_leave_in_one_write_without_waking_the_pump(harness):
    h = harness(snapshot=False)
    direct = with_direct(h)
    session = h.start()
    await asyncio.sleep(0.01)  # the pump now waits
    for n in range(3):  # one router batch: synchronous
        session.core.deliver(position("a", n), 0.0)
        session.core.deliver(position("b", n), 0.0)
    await asyncio.sleep(0)  # the next turn
    assert [len(texts) for texts in direct.writes] == [6]
    assert [json.loads(t)["data"]["data"]["N"] for t in direct.writes[0]] == [0, 0, 1, 1, 2, 2]
    assert h.transport.sent == []  # nothing through the awaited path
    assert session._writes.waiting, "the pump was woken"
    assert h.metrics.counters["frames_sent"] == 6
    session.core.deliver(position("a", 3), 0.0)  # the next batch: armed again
    await asyncio.sleep(0)
    assert [len(texts) for texts in direct.writes] == [6, 1]


async def test_sessions_sharing_a_write_round_each_get_their_frames_in_one_write(harness):
    """Many sessions, one router batch: one round writes each client once, with all its frames."""
    flusher = Flusher(Metrics())
    first, second = harness(snapshot=False), harness(snapshot=False)
    directs = [with_direct(h) for h in (first, second)]
    sessions = [h.start(flusher=flusher) for h in (first, second)]
    await asyncio.sleep(0.01)  # both pumps wait
    for n in range(2):
        for session in sessions:
            session.core.deliver(position("a", n), 0.0)
    await asyncio.sleep(0)
    assert [[len(texts) for texts in direct.writes] for direct in directs] == [[2], [2]]
    assert all(s._writes.waiting for s in sessions), "a pump was woken"


async def test_with_a_write_delay_frames_of_several_batches_leave_in_one_write(harness):
    flusher = Flusher(Metrics(), delay=0.05)
    h = harness(snapshot=False)
    direct = with_direct(h)
    session = h.start(flusher=flusher)
    await asyncio.sleep(0.01)  # the pump waits
    for n in range(3):  # three router batches, a turn or more apart
        session.core.deliver(position("a", n), 0.0)
        await asyncio.sleep(0.005)
    assert direct.writes == []
    await h.until(lambda: direct.writes)
    assert [len(texts) for texts in direct.writes] == [3]


async def test_keep_alives_on_an_idle_stream_are_written_directly_without_waking_the_pump(harness):
    """A keep-alive is due on every stream every interval: through the pump it cost each session a
    task wake-up and an ASGI send; from the timer it is one direct write, like a routed frame."""
    h = harness(snapshot=False, keepalive_seconds=0.05)
    direct = with_direct(h)
    session = h.start()
    await h.until(lambda: len(direct.writes) >= 3)
    assert h.transport.sent == []  # nothing through the awaited path
    assert all(json.loads(texts[-1])["event"] == "ping" for texts in direct.writes)
    assert session._writes.waiting, "the pump was woken"


async def test_a_socket_that_would_block_sends_through_the_pump_under_its_deadline(harness):
    h = harness(snapshot=False, send_timeout_seconds=1.0)
    direct = with_direct(h)
    session = h.start()
    await asyncio.sleep(0.01)
    direct.is_ready = False
    h.transport.writable.clear()  # the plain path stalls too: a client that does not read
    session.core.deliver(position("a", 1), 0.0)
    await asyncio.sleep(0.05)
    assert direct.writes == [] and h.transport.sent == []
    await h.ended(timeout=3.0)  # past the deadline: closed as a slow client
    assert h.metrics.counters["slow_client_closes"] == 1


async def test_once_the_socket_drains_direct_writes_resume(harness):
    h = harness(snapshot=False)
    direct = with_direct(h)
    session = h.start()
    await asyncio.sleep(0.01)
    direct.is_ready = False
    session.core.deliver(position("a", 1), 0.0)
    await h.until(lambda: numbers(h.transport) == [1])  # written by the pump
    direct.is_ready = True
    session.core.deliver(position("a", 2), 0.0)
    await h.until(lambda: direct.writes)
    assert [json.loads(t)["data"]["data"]["N"] for t in direct.writes[0]] == [2]


async def test_a_flush_due_after_the_close_writes_nothing(harness):
    h = harness(snapshot=False)
    direct = with_direct(h)
    session = h.start()
    await asyncio.sleep(0.01)
    session.core.deliver(position("a", 1), 0.0)
    session.close(CloseCode.GOING_AWAY, "bye")  # in the same turn, before the flush
    await h.ended()
    assert direct.writes == []
    assert h.transport.closed == (CloseCode.GOING_AWAY, "bye")


class HeldCore(StreamCore):
    """A core that holds one frame until a time, as a rate limit (max_hz) holds a position."""

    held: tuple[float, str] | None = None

    def take(self, now: float) -> list[str]:
        if self.held is not None and now >= self.held[0]:
            self.outbox.put_kept(self.held[1])
            self.held = None
        return super().take(now)

    def wait_time(self, now: float) -> float:
        wait = super().wait_time(now)
        return wait if self.held is None else min(wait, max(0.0, self.held[0] - now))


async def test_a_frame_held_until_later_goes_out_then_though_the_pump_was_never_woken(harness):
    h = harness(snapshot=False)
    direct = with_direct(h)
    core = HeldCore(h.device_ids, table=h.table, policy=h.limits.policy)
    session = Session(h.transport, core, name="session-1", limits=h.limits, metrics=h.metrics)
    h.session, h.task = session, asyncio.create_task(session.run())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    core.held = (loop.time() + 0.1, position("b", 9).text)
    core.deliver(position("a", 1), 0.0)  # written directly; the held frame is due in 0.1 s
    await h.until(lambda: direct.writes)
    await h.until(lambda: h.transport.sent or len(direct.writes) > 1, timeout=1.0)
    sent = [t for texts in direct.writes for t in texts] + h.transport.sent
    assert [json.loads(t)["data"]["data"]["N"] for t in sent] == [1, 9]


class ManyAtOnceTransport(FakeTransport):
    """A transport that writes several frames in one write (``send_many``) and has no close frame
    to carry a reason (``in_band_close``), as a Server-Sent Events response."""

    in_band_close = True

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    async def send_many(self, texts: list[str]) -> None:
        await self.writable.wait()
        self.writes.append(list(texts))
        self.sent += texts


async def test_frames_routed_in_one_turn_leave_in_one_write_through_send_many(harness):
    h = harness(snapshot=False)
    h.transport = ManyAtOnceTransport()
    session = h.start()
    await asyncio.sleep(0.01)
    for n in range(5):
        session.core.deliver(position("a", n), 0.0)
    await h.until(lambda: len(h.transport.sent) == 5)
    assert h.transport.writes == [h.transport.sent]
    assert h.metrics.counters["frames_sent"] == 5


@pytest.mark.parametrize(
    ("code", "reason", "told"),
    [
        (CloseCode.TRY_AGAIN_LATER, "server overloaded", True),
        (CloseCode.INTERNAL_ERROR, "internal error", True),
        (CloseCode.GOING_AWAY, "server shutting down", False),
        (CloseCode.NORMAL, "", False),
    ],
)
async def test_without_close_frames_every_end_but_a_normal_one_or_a_shutdown_says_why_in_an_error_frame(
    harness, code, reason, told
):
    h = harness(snapshot=False)
    h.transport = ManyAtOnceTransport()
    session = h.start()
    await asyncio.sleep(0.01)
    session.close(code, reason)
    await h.ended()
    assert h.transport.closed == (code, reason)
    expected = [{"event": "error", "data": {"message": reason}}] if told else []
    assert [f for f in h.transport.frames() if f["event"] != "ping"] == expected


async def test_without_close_frames_an_expired_token_is_told_once_as_over_websocket(harness):
    h = harness(snapshot=False, grant=Grant(frozenset({"a"}), time.time() + 0.05))
    h.transport = ManyAtOnceTransport()
    h.start()
    await h.ended()
    assert h.transport.frames() == [{"event": "error", "data": {"message": "token expired"}}]


async def test_with_close_frames_a_close_for_overload_sends_no_error_frame_as_before(harness):
    h = harness(snapshot=False)
    session = h.start()
    await asyncio.sleep(0.01)
    session.close(CloseCode.TRY_AGAIN_LATER, "server overloaded")
    await h.ended()
    assert h.transport.sent == [] and h.transport.closed == (CloseCode.TRY_AGAIN_LATER, "server overloaded")


# The gate: a process that warms up holds new streams until its snapshot is read


async def test_a_stream_opens_once_its_gate_opens_and_starts_from_the_snapshot_known_then(harness):
    h = harness()
    warm = asyncio.Event()
    h.start(gate=warm.wait)
    await asyncio.sleep(0.05)
    assert h.transport.sent == [] and len(h.table) == 0  # not subscribed: no live frame can come
    h.table.remember(position("a", 1))  # what the warm-up read
    warm.set()
    await h.until(lambda: numbers(h.transport) == [1])


async def test_a_stream_closed_while_it_waits_at_the_gate_ends_at_once(harness):
    h = harness()
    h.start(gate=asyncio.Event().wait)  # a gate that never opens
    await asyncio.sleep(0.05)
    h.session.close(CloseCode.GOING_AWAY, "server shutting down")
    await h.ended(timeout=1.0)
    assert h.transport.closed == (CloseCode.GOING_AWAY, "server shutting down")
    assert len(h.table) == 0
