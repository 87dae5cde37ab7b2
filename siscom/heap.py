"""Giving memory the process freed back to the operating system, where glibc keeps it.

Most frame texts are longer than 512 bytes, so Python takes them from the C allocator, not from
its own small-object arenas. Clients that come and go leave such blocks freed all over glibc's
heap (each new stream's snapshot and replay frames, built for it, its outbox, its buffers) among
blocks still in use, and glibc gives memory back on its own only from the top of the heap: the
freed pages in between stay in the process's RSS, reused only by later blocks that fit. Under
churn, RSS grew by hundreds of megabytes while the live objects stayed as many (issue 23).
``malloc_trim(0)`` hands every whole free page of the heap back (glibc >= 2.8 releases pages in
the middle of the heap too, with ``madvise``), without moving anything.

:class:`HeapTrimmer` calls it every few seconds, from a worker thread (``ctypes`` releases the
GIL around the call, so the event loop runs on meanwhile): a few milliseconds of one thread for
a heap of a few hundred megabytes. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["HeapTrimmer", "glibc_trim"]


def glibc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a function, or None where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Trims the heap every ``interval`` seconds, off the event loop."""

    def __init__(self, interval: float, trim: Callable[[], int]) -> None:
        self._interval = interval
        self._trim = trim
        #: Times the heap was trimmed.
        self.trims = 0

    async def run(self) -> None:
        """Trim until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await asyncio.to_thread(self._trim)
            self.trims += 1
