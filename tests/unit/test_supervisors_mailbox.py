"""The mailbox: order, bounds, backpressure and batch draining.

Every wait for a getter or sender to be woken has a short deadline (``within``): a mailbox that
forgets to wake one fails in seconds, saying which.
"""

from __future__ import annotations

import asyncio

import pytest
from unit.deadlines import within

from supervisors import Mailbox, MailboxFull


async def settle(turns: int = 10) -> None:
    """Let every task that can make progress do so."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_unbounded_mailbox_keeps_every_message_in_order() -> None:
    mailbox: Mailbox[int] = Mailbox()
    for number in range(10_000):
        mailbox.put_nowait(number)

    assert len(mailbox) == 10_000
    assert [await within(mailbox.get(), "a waiting message") for _ in range(3)] == [0, 1, 2]
    assert len(mailbox) == 9_997


async def test_bounded_mailbox_refuses_a_message_when_full() -> None:
    mailbox: Mailbox[str] = Mailbox(maxsize=2)
    mailbox.put_nowait("a")
    mailbox.put_nowait("b")

    with pytest.raises(MailboxFull):
        mailbox.put_nowait("c")

    assert mailbox.drain() == ["a", "b"]


def test_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError):
        Mailbox(maxsize=-1)


async def test_get_waits_for_a_message() -> None:
    mailbox: Mailbox[str] = Mailbox()
    getter = asyncio.create_task(mailbox.get())
    await settle()
    assert not getter.done()

    mailbox.put_nowait("hello")

    assert await within(getter, "the getter to be woken by a message") == "hello"


async def test_put_waits_for_room_in_a_full_mailbox() -> None:
    mailbox: Mailbox[str] = Mailbox(maxsize=1)
    await within(mailbox.put("first"), "room in an empty mailbox")
    putter = asyncio.create_task(mailbox.put("second"))
    await settle()
    assert not putter.done()  # backpressure: the sender is held

    assert await within(mailbox.get(), "a waiting message") == "first"
    await within(putter, "the sender to be woken by room")

    assert mailbox.drain() == ["second"]


async def test_drain_takes_what_is_waiting_without_blocking() -> None:
    mailbox: Mailbox[int] = Mailbox()
    assert mailbox.drain() == []

    for number in range(5):
        mailbox.put_nowait(number)

    assert mailbox.drain(limit=2) == [0, 1]
    assert mailbox.drain() == [2, 3, 4]
    assert len(mailbox) == 0


async def test_drain_makes_room_for_waiting_senders() -> None:
    mailbox: Mailbox[int] = Mailbox(maxsize=2)
    await within(mailbox.put(1), "room")
    await within(mailbox.put(2), "room")
    putters = [asyncio.create_task(mailbox.put(number)) for number in (3, 4)]
    await settle()
    assert not any(putter.done() for putter in putters)

    assert mailbox.drain() == [1, 2]
    await within(asyncio.gather(*putters), "the senders to be woken by the drain")

    assert mailbox.drain() == [3, 4]


async def test_cancelled_getter_does_not_swallow_a_message() -> None:
    mailbox: Mailbox[str] = Mailbox()
    abandoned = asyncio.create_task(mailbox.get())
    await settle()
    abandoned.cancel()
    mailbox.put_nowait("kept")
    with pytest.raises(asyncio.CancelledError):
        await within(abandoned, "the cancelled getter to end")

    assert await within(mailbox.get(), "the message the cancelled getter did not take") == "kept"
