"""Something a test runs beside what it drives: a watcher, a reader, a sampler."""

from __future__ import annotations

import asyncio
from typing import Self


class Background:
    """Runs :meth:`_run` in a task of its own while an ``async with`` block runs; cancels it and
    waits for it to end when the block ends, however it ends."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,))
