"""The flag a session sets when it has finished (siscom/sessions/latch.py)."""

from __future__ import annotations

import asyncio

import pytest

from siscom.sessions.latch import Latch


async def test_every_waiter_returns_once_it_is_set_and_later_waits_return_at_once():
    latch = Latch()
    waiters = [asyncio.ensure_future(latch.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not latch.is_set() and not any(w.done() for w in waiters)
    latch.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert latch.is_set() and await latch.wait()


async def test_a_waiter_cancelled_leaves_the_others_waiting():
    latch = Latch()
    first, second = asyncio.ensure_future(latch.wait()), asyncio.ensure_future(latch.wait())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    latch.set()
    assert await asyncio.wait_for(second, 1)
