"""Handing freed memory back: glibc's malloc_trim on a heap fragmented as churn leaves it."""

from __future__ import annotations

import asyncio
import gc
import sys

import psutil
import pytest

from siscom.heap import HeapTrimmer, glibc_trim

MB = 1024 * 1024

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or glibc_trim() is None, reason="malloc_trim is glibc's"
)


def rss() -> int:
    return psutil.Process().memory_info().rss


@glibc
def test_trimming_gives_back_the_pages_freed_between_blocks_still_in_use():
    """Frames longer than 512 bytes come from glibc; most of them freed, one in 64 kept (as a
    finished stream's frames are freed while others' stay), leave free pages among used ones
    that glibc does not give back by itself."""
    trim = glibc_trim()
    assert trim is not None
    trim()
    blocks = [("x" * 600) + str(n) for n in range(160_000)]  # about 100 MB
    kept = blocks[::64]
    del blocks
    gc.collect()
    before = rss()
    trim()
    after = rss()
    assert before - after > 50 * MB, f"{before / MB:.0f} -> {after / MB:.0f} MB"
    assert len(kept) == 2500


async def test_the_trimmer_trims_every_interval_until_cancelled():
    calls = []
    trimmer = HeapTrimmer(0.01, lambda: calls.append(1) or 1)
    task = asyncio.create_task(trimmer.run())
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 5 <= trimmer.trims == len(calls)
