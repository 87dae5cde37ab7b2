"""The session outbox: FIFO while the client keeps up, conflating when it falls behind."""

import asyncio

import pytest

from supervisors import MailboxFull

from siscom.frames import Frame
from siscom.outbox import Outbox


def position(device: str, n: int) -> Frame:
    return Frame(device, f"{device}:{n}", False, 0)


def alert(device: str, n: int) -> Frame:
    return Frame(device, f"alert {device}:{n}", True, 0)


async def test_a_client_that_keeps_up_gets_every_frame_in_order():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    for n in range(5):
        outbox.put_frame(position("a", n))
    assert await outbox.take(1.0) == [f"a:{n}" for n in range(5)]
    assert outbox.conflated == 0


async def test_a_client_that_falls_behind_gets_the_newest_position_of_each_device():
    outbox = Outbox(soft_limit=4, max_alerts=10)
    for n in range(3):
        outbox.put_frame(position("a", n))
        outbox.put_frame(position("b", n))
    texts = await outbox.take(1.0)
    # Compaction ran when the queue passed 4; later frames arrived after it.
    assert texts[-2:] == ["a:2", "b:2"]
    assert "a:0" not in texts and "b:0" not in texts
    assert outbox.conflated == 6 - len(texts)


async def test_alerts_are_never_conflated():
    outbox = Outbox(soft_limit=2, max_alerts=100)
    for n in range(20):
        outbox.put_frame(alert("a", n))
        outbox.put_frame(position("a", n))
    texts = await outbox.take(1.0)
    assert [t for t in texts if t.startswith("alert")] == [f"alert a:{n}" for n in range(20)]
    assert texts[-1] == "a:19"
    assert len([t for t in texts if not t.startswith("alert")]) < 20


async def test_too_many_waiting_alerts_are_refused():
    outbox = Outbox(soft_limit=10, max_alerts=3)
    for n in range(3):
        outbox.put_frame(alert("a", n))
    with pytest.raises(MailboxFull):
        outbox.put_frame(alert("a", 3))
    await outbox.take(1.0)
    outbox.put_frame(alert("a", 4))  # taking frees the bound


async def test_memory_stays_bounded_by_the_number_of_devices():
    outbox = Outbox(soft_limit=100, max_alerts=10)
    for n in range(100_000):
        outbox.put_frame(position(f"d{n % 50}", n))
    assert len(outbox) <= 200
    texts = await outbox.take(1.0)
    newest = {t.split(":")[0]: int(t.split(":")[1]) for t in texts}
    assert newest == {f"d{k}": 100_000 - 50 + k for k in range(50)}


async def test_take_returns_nothing_when_the_timeout_passes():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    assert await outbox.take(0.01) == []


async def test_take_wakes_as_soon_as_a_frame_arrives():
    outbox = Outbox(soft_limit=10, max_alerts=10)
    taker = asyncio.create_task(outbox.take(30))
    await asyncio.sleep(0)
    outbox.put_frame(position("a", 1))
    assert await asyncio.wait_for(taker, 1) == ["a:1"]
