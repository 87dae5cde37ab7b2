"""A short deadline for one await in a unit test, so that a broken component fails fast.

Without it, an await that never completes (a supervisor that never escalates, a mailbox that
never wakes its getter) hangs until pytest's global timeout and says nothing about what was
awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: Long enough for anything these tests await on a loaded machine, short enough to fail fast.
SECONDS = 2.0


async def within(awaitable: Awaitable[T], what: str, seconds: float = SECONDS) -> T:
    """``await awaitable``, or fail with ``what`` once ``seconds`` have passed."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise AssertionError(f"not within {seconds:g} s: {what}") from None
        raise
