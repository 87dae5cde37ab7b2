"""The session's side of the limits: its inbound allowance, its place in the subscription bound,
and the backlog figure overload shedding ranks it by. The core decides; these tests drive the
session (the pump) so that what the client sees and what is counted are checked together."""

from __future__ import annotations

import asyncio
import json

from siscom.core.deliveries import Delivery
from siscom.core.protocol import CloseCode
from siscom.core.stream import StreamCore
from siscom.core.subscriptions import SubscriptionTable
from siscom.metrics import Metrics
from siscom.security.inbound import InboundLimits, InboundRates
from siscom.sessions.session import Session, SessionLimits
from siscom.sessions.transport import Transport

LIMITS = SessionLimits(
    keepalive_seconds=60, send_timeout_seconds=5, max_pending_frames=100, max_device_ids=10, snapshot=False
)


class ScriptedTransport(Transport):
    peer = "192.0.2.9"

    def __init__(self) -> None:
        self.gone = False
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.incoming: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self) -> str:
        return await self.incoming.get()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        pass


def session(
    transport: ScriptedTransport, *, table: SubscriptionTable | None = None, ids=frozenset({"a"}), rates=None
) -> tuple[Session, Metrics]:
    metrics = Metrics()
    inbound = InboundLimits(rates, asyncio.get_running_loop().time()) if rates else None
    table = table if table is not None else SubscriptionTable()
    core = StreamCore(ids, table=table, policy=LIMITS.policy, inbound=inbound)
    return Session(transport, core, name="session-test", limits=LIMITS, metrics=metrics), metrics


def running(s: Session) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """Run ``s`` as the gateway and its route do: the pump in a task of its own, and what the
    client sends read from another (the route's; it ends with the session)."""
    return asyncio.create_task(s.run()), asyncio.create_task(s.listen())


async def test_messages_past_the_burst_close_the_session_with_1008_too_many_messages() -> None:
    transport = ScriptedTransport()
    rates = InboundRates(messages_per_second=1, message_burst=3, pings_per_second=1, ping_burst=2)
    s, metrics = session(transport, rates=rates)
    task, _listener = running(s)
    for _ in range(10):
        transport.incoming.put_nowait('{"hello":1}')
    await asyncio.wait_for(task, 2)
    assert transport.closed == (CloseCode.POLICY_VIOLATION, "too many messages")
    assert json.loads(transport.sent[-1])["data"]["message"] == "too many messages"
    assert metrics.counters["too_many_messages"] == 1 and metrics.counters["slow_client_closes"] == 0


async def test_pings_past_the_burst_are_refused_and_close_the_session_once() -> None:
    transport = ScriptedTransport()
    rates = InboundRates(messages_per_second=1, message_burst=3, pings_per_second=1, ping_burst=2)
    s, metrics = session(transport, rates=rates)
    task = asyncio.create_task(s.run())
    answers = [s.control_frame() for _ in range(5)]
    assert answers == [True, True, False, False, False] and not s.listening
    await asyncio.wait_for(task, 2)
    assert transport.closed == (CloseCode.POLICY_VIOLATION, "too many messages")
    assert metrics.counters["too_many_messages"] == 1


async def test_a_subscription_past_the_process_bound_closes_with_1013_and_is_counted() -> None:
    table = SubscriptionTable(max_ids=2)
    first, second = ScriptedTransport(), ScriptedTransport()
    s1, _ = session(first, table=table, ids=frozenset({"a", "b"}))
    s2, metrics = session(second, table=table, ids=frozenset({"c"}))
    task1 = asyncio.create_task(s1.run())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(s2.run(), 2)
    assert second.closed == (CloseCode.TRY_AGAIN_LATER, "server at its subscription limit")
    assert metrics.counters["subscription_limit_refusals"] == 1 and metrics.counters["slow_client_closes"] == 0
    assert table.subscribed_ids == 2
    s1.close(CloseCode.NORMAL)
    await asyncio.wait_for(task1, 2)
    assert table.subscribed_ids == 0


async def test_a_subscribe_message_past_the_process_bound_closes_with_an_error_frame_and_1013() -> None:
    table = SubscriptionTable(max_ids=2)
    transport = ScriptedTransport()
    s, metrics = session(transport, table=table, ids=frozenset({"a"}))
    task, _listener = running(s)
    transport.incoming.put_nowait(json.dumps({"action": "subscribe", "device_ids": ["b", "c"]}))
    await asyncio.wait_for(s.finished.wait(), 2)
    assert transport.closed == (CloseCode.TRY_AGAIN_LATER, "server at its subscription limit")
    assert json.loads(transport.sent[-1])["data"]["message"] == "server at its subscription limit"
    assert metrics.counters["subscription_limit_refusals"] == 1 and metrics.counters["slow_client_closes"] == 0
    await asyncio.wait_for(task, 2)
    assert table.subscribed_ids == 0


async def test_a_1013_for_overload_is_not_counted_as_a_slow_client() -> None:
    transport = ScriptedTransport()
    s, metrics = session(transport)
    task = asyncio.create_task(s.run())
    await asyncio.sleep(0.01)
    s.close(CloseCode.TRY_AGAIN_LATER, "server overloaded")
    await asyncio.wait_for(task, 2)
    assert transport.closed == (CloseCode.TRY_AGAIN_LATER, "server overloaded")
    assert metrics.counters["slow_client_closes"] == 0


async def test_the_backlog_is_what_waits_in_the_outbox() -> None:
    transport = ScriptedTransport()
    s, _ = session(transport)
    assert s.backlog == 0
    for _ in range(3):
        s.core.deliver(Delivery("a", '{"event":"message","data":{}}', False, 0), 0.0)
    assert s.backlog == 3
