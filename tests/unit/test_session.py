"""The session actor, driven through a fake transport: what one client sees, and when it ends."""

from __future__ import annotations

import asyncio
import json

import pytest

import siscom.sessions.session as session_module
from siscom.sessions.session import Session, SessionLimits
from siscom.core.deliveries import Delivery
from siscom.metrics import Metrics
from siscom.core.protocol import CloseCode, alert_frame, message_frame
from siscom.core.subscriptions import SubscriptionTable
from siscom.web.transport import ClientGone

BOUND = 50


def limits(**changes) -> SessionLimits:
    values = dict(keepalive_seconds=60.0, send_timeout_seconds=5.0, max_pending_frames=BOUND, max_device_ids=10, snapshot=True)
    values.update(changes)
    return SessionLimits(**values)


class FakeTransport:
    """Keeps what the session sends. ``writable`` cleared makes writes stall, as a client that
    does not read does; ``closable`` cleared makes the close frame wait too. ``incoming`` is what
    the client sends (an exception in it is raised by ``receive``)."""

    peer = "192.0.2.1"

    def __init__(self) -> None:
        self.gone = False
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closable = asyncio.Event()
        self.closable.set()
        self.incoming: asyncio.Queue[str | BaseException] = asyncio.Queue()

    async def send(self, text: str) -> None:
        if self.gone:
            raise ClientGone(self.peer)
        await self.writable.wait()
        self.sent.append(text)

    async def receive(self) -> str:
        item = await self.incoming.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self, code: int, reason: str) -> None:
        await self.closable.wait()
        self.closed = (code, reason)

    def frames(self) -> list[dict]:
        return [json.loads(text) for text in self.sent]

    def events(self) -> list[str]:
        return [frame["event"] for frame in self.frames()]


class Harness:
    def __init__(self, device_ids=frozenset({"a", "b"}), **limit_changes) -> None:
        self.transport = FakeTransport()
        self.table = SubscriptionTable()
        self.metrics = Metrics()
        self.device_ids = device_ids
        self.limits = limits(**limit_changes)
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Session:
        self.session = Session(self.transport, self.device_ids, table=self.table, limits=self.limits, metrics=self.metrics)
        self.task = asyncio.create_task(self.session.run())
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
    tasks = [h.task for h in made if h.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def test_keep_alives_are_sent_while_nothing_else_is(harness):
    h = harness(keepalive_seconds=0.05)
    h.start()
    await h.until(lambda: h.transport.events().count("ping") >= 3)
    assert h.transport.frames()[0] == {"event": "ping", "data": {"type": "keep-alive"}}


async def test_a_new_session_gets_the_snapshot_first_then_live_frames_in_order(harness):
    h = harness()
    h.table.remember("a", position("a", 0).text)
    h.table.remember("z", position("z", 0).text)  # not subscribed
    session = h.start()
    await h.until(lambda: h.transport.sent)
    for n in range(1, 6):
        session.deliver(position("a", n))
    await h.until(lambda: len(h.transport.sent) == 6)
    assert numbers(h.transport) == [0, 1, 2, 3, 4, 5]
    assert h.metrics.counters["frames_sent"] == 6


async def test_deliver_never_waits_and_a_stalled_client_gets_the_newest_position_per_device(harness):
    h = harness(snapshot=False)
    session = h.start()
    h.transport.writable.clear()
    session.deliver(position("a", -1))
    await asyncio.sleep(0.01)  # that write is now stalled
    for n in range(10 * BOUND):  # synchronous: the router never waits for a client
        session.deliver(position("a", n))
        session.deliver(position("b", n))
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
        session.deliver(alert("a", n))
    await h.until(lambda: len(h.transport.sent) == BOUND)
    assert numbers(h.transport, "alert") == list(range(BOUND))

    h.transport.writable.clear()
    session.deliver(alert("a", BOUND))
    await asyncio.sleep(0.01)
    for n in range(BOUND + 1, 2 * BOUND + 2):
        session.deliver(alert("a", n))
    await h.ended()
    assert h.transport.closed == (CloseCode.TRY_AGAIN_LATER, "client too slow")
    assert h.metrics.counters["slow_client_closes"] == 1
    assert len(h.table) == 0


async def test_a_write_stalled_past_the_send_timeout_closes_with_1013_and_is_counted(harness):
    h = harness(snapshot=False, send_timeout_seconds=0.1)
    session = h.start()
    h.transport.writable.clear()
    session.deliver(position("a", 1))
    await asyncio.sleep(0.01)
    for n in range(3 * BOUND):
        session.deliver(position("a", n))
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
    session.deliver(position("a", 1))
    await asyncio.sleep(0.01)  # that write is now stalled; the close frame is not
    session.close(CloseCode.GOING_AWAY, "server shutting down")
    await h.ended(timeout=1.0)
    assert h.transport.closed == (CloseCode.GOING_AWAY, "server shutting down")
    assert h.metrics.counters["slow_client_closes"] == 0


async def test_a_close_frame_stuck_behind_unread_data_does_not_keep_the_session(harness, monkeypatch):
    monkeypatch.setattr(session_module, "CLOSE_TIMEOUT", 0.05)
    monkeypatch.setattr(session_module, "CLOSE_LINGER", 0.5)
    h = harness(snapshot=False, send_timeout_seconds=0.05)
    session = h.start()
    h.transport.writable.clear()
    h.transport.closable.clear()
    session.deliver(position("a", 1))
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


async def test_a_close_frame_that_never_goes_out_is_given_up_after_the_linger(harness, monkeypatch):
    monkeypatch.setattr(session_module, "CLOSE_TIMEOUT", 0.05)
    monkeypatch.setattr(session_module, "CLOSE_LINGER", 0.1)
    h = harness(snapshot=False)
    session = h.start()
    h.transport.closable.clear()
    session.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
    await h.ended()
    await asyncio.wait_for(session.close_sent(), 1.0)
    assert h.transport.closed is None


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


async def test_a_client_that_disconnects_while_the_session_reads_ends_it_quietly(harness):
    h = harness()
    h.start()
    await h.transport.incoming.put(ClientGone("gone"))
    await h.ended()
    assert h.transport.closed is None
    assert len(h.table) == 0


async def test_subscribe_and_unsubscribe_change_the_devices_and_are_acknowledged(harness):
    h = harness(device_ids=frozenset({"a"}), snapshot=True)
    h.table.remember("b", position("b", 0).text)
    session = h.start()
    await h.transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["b"]}))
    await h.until(lambda: len(h.transport.sent) == 2)
    assert h.transport.frames() == [
        {"event": "ack", "data": {"action": "subscribe", "device_ids": ["a", "b"]}},
        json.loads(position("b", 0).text),  # the snapshot of the device just added
    ]
    assert h.table.filter_of(session) == {"a", "b"}
    await h.transport.incoming.put(json.dumps({"action": "unsubscribe", "device_ids": ["a"]}))
    await h.until(lambda: len(h.transport.sent) == 3)
    assert h.transport.frames()[-1] == {"event": "ack", "data": {"action": "unsubscribe", "device_ids": ["b"]}}
    assert h.table.filter_of(session) == {"b"}


async def test_requests_that_cannot_be_granted_get_an_error_frame_and_the_stream_goes_on(harness):
    h = harness(device_ids=None)
    session = h.start()
    await h.transport.incoming.put(json.dumps({"action": "unsubscribe", "device_ids": ["a"]}))
    await h.transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": [f"d{n}" for n in range(11)]}))
    await h.transport.incoming.put("not a command")
    await h.until(lambda: len(h.transport.sent) == 2)
    assert h.transport.events() == ["error", "error"]
    assert "every device" in h.transport.frames()[0]["data"]["message"]
    session.deliver(position("q", 1))
    await h.until(lambda: len(h.transport.sent) == 3)
    assert h.table.filter_of(session) is None
