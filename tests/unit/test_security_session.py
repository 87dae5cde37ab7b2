"""A session enforces its client's token: granted devices only, and not past the expiry."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from siscom.sessions.session import Session, SessionLimits
from siscom.metrics import Metrics
from siscom.core.protocol import CloseCode
from siscom.core.subscriptions import SubscriptionTable

LIMITS = SessionLimits(
    keepalive_seconds=60.0, send_timeout_seconds=5.0, max_pending_frames=100, max_device_ids=100, snapshot=False
)
GRANTED = frozenset({"bus-1", "bus-2", "bus-3"})


class FakeTransport:
    """Records what the session sends; the test plays the client through ``incoming``."""

    peer = "198.51.100.7"

    def __init__(self) -> None:
        self.gone = False
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None
        self.incoming: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def receive(self) -> str:
        return await self.incoming.get()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def start(device_ids=None, **grant) -> tuple[Session, FakeTransport, Metrics, asyncio.Task]:
    transport, metrics = FakeTransport(), Metrics()
    session = Session(transport, device_ids, table=SubscriptionTable(), limits=LIMITS, metrics=metrics, **grant)
    return session, transport, metrics, asyncio.create_task(session.run())


async def stop(session: Session, task: asyncio.Task) -> None:
    session.close(CloseCode.NORMAL)
    await asyncio.wait_for(task, 2.0)


async def test_subscribing_within_the_grant_is_acknowledged():
    session, transport, metrics, task = await start(frozenset({"bus-1"}), allowed_devices=GRANTED)
    await transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["bus-2"]}))
    async with asyncio.timeout(2):
        while not transport.sent:
            await asyncio.sleep(0.01)
    assert transport.sent == [{"event": "ack", "data": {"action": "subscribe", "device_ids": ["bus-1", "bus-2"]}}]
    assert metrics.counters["forbidden_requests"] == 0
    await stop(session, task)


async def test_subscribing_outside_the_grant_ends_the_stream_with_an_error_frame_and_1008():
    session, transport, metrics, task = await start(frozenset({"bus-1"}), allowed_devices=GRANTED)
    await transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["bus-3", "car-9"]}))
    await asyncio.wait_for(session.finished.wait(), 2.0)
    assert transport.sent == [
        {"event": "error", "data": {"message": "device ids not allowed by the token", "device_ids": ["car-9"]}}
    ]
    assert transport.closed == (CloseCode.POLICY_VIOLATION, "device not allowed")
    assert metrics.counters["forbidden_requests"] == 1
    await task


async def test_without_a_grant_any_subscription_is_allowed():
    session, transport, metrics, task = await start(frozenset({"bus-1"}))
    await transport.incoming.put(json.dumps({"action": "subscribe", "device_ids": ["car-9"]}))
    async with asyncio.timeout(2):
        while not transport.sent:
            await asyncio.sleep(0.01)
    assert transport.sent[0]["event"] == "ack"
    await stop(session, task)


async def test_the_stream_closes_with_1008_when_the_token_expires():
    session, transport, metrics, task = await start(GRANTED, allowed_devices=GRANTED, expires_at=time.time() + 0.3)
    await asyncio.sleep(0.1)
    assert not session.finished.is_set()
    await asyncio.wait_for(session.finished.wait(), 3.0)
    assert transport.sent[-1] == {"event": "error", "data": {"message": "token expired"}}
    assert transport.closed == (CloseCode.POLICY_VIOLATION, "token expired")
    assert metrics.counters["token_expiries"] == 1
    await task


async def test_a_token_that_expired_before_the_session_started_closes_it_at_once():
    session, transport, metrics, task = await start(None, expires_at=time.time() - 1)
    await asyncio.wait_for(session.finished.wait(), 1.0)
    assert transport.closed == (CloseCode.POLICY_VIOLATION, "token expired")
    await task


async def test_a_session_that_ends_first_leaves_no_expiry_timer_behind():
    session, transport, metrics, task = await start(None, expires_at=time.time() + 0.2)
    await stop(session, task)
    await asyncio.sleep(0.4)
    assert metrics.counters["token_expiries"] == 0
    assert transport.closed == (CloseCode.NORMAL, "")


@pytest.mark.parametrize("command", [{"action": "unsubscribe", "device_ids": ["bus-1"]}, {"hello": "there"}])
async def test_unsubscribing_and_other_messages_are_never_forbidden(command):
    session, transport, metrics, task = await start(GRANTED, allowed_devices=GRANTED)
    await transport.incoming.put(json.dumps(command))
    await asyncio.sleep(0.1)
    assert not session.finished.is_set()
    assert metrics.counters["forbidden_requests"] == 0
    await stop(session, task)
