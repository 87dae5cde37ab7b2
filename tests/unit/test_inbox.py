"""The queue between a websocket's receiving task and its route (siscom/web/server/inbox.py)."""

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


async def test_a_second_reader_at_the_same_time_is_refused():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await inbox.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
