"""The queue between a connection's reading and the app, and between a websocket's receiving task and
its route (siscom/web/server/inbox.py)."""

from __future__ import annotations

import asyncio

import pytest

from siscom.web.server.inbox import Inbox


async def test_items_come_out_in_the_order_they_went_in_and_a_reader_waits_for_the_next():
    inbox = Inbox()
    await inbox.put("a")
    inbox.put_nowait("b")
    assert [await inbox.get(), await inbox.get()] == ["a", "b"]
    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reading.done()
    await inbox.put("c")
    assert await asyncio.wait_for(reading, 1) == "c"
    assert inbox.qsize() == 0


async def test_a_reader_cancelled_as_an_item_arrives_leaves_it_for_the_next_reader():
    inbox = Inbox()
    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("kept")
    reading.cancel()  # woken, but cancelled before it could take the item
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert inbox.qsize() == 1
    assert await asyncio.wait_for(inbox.get(), 1) == "kept"


async def test_two_readers_waiting_get_the_next_items_in_the_order_they_came():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == ["a", "b"]


async def test_a_full_inbox_makes_the_writer_wait_until_an_item_is_read():
    inbox = Inbox(maxsize=2)
    await inbox.put(1)
    await inbox.put(2)
    with pytest.raises(asyncio.QueueFull):
        inbox.put_nowait(3)
    writing = asyncio.ensure_future(inbox.put(3))
    await asyncio.sleep(0.01)
    assert not writing.done() and inbox.qsize() == 2
    assert await inbox.get() == 1
    await asyncio.wait_for(writing, 1)
    assert [await inbox.get(), await inbox.get()] == [2, 3]


async def test_a_writer_cancelled_as_room_appears_passes_the_room_to_the_next_writer():
    inbox = Inbox(maxsize=1)
    await inbox.put("in")
    first = asyncio.ensure_future(inbox.put("first"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(inbox.put("second"))
    await asyncio.sleep(0)
    assert await inbox.get() == "in"  # wakes the first writer ...
    first.cancel()  # ... which is cancelled before it can write
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert await inbox.get() == "second"
    assert inbox.qsize() == 0
