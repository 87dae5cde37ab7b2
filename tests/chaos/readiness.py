"""Watching ``/ready`` while a test breaks things: when it changed, and what it said."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from support.background import Background
from support.http import http_get_json


class ReadyWatch(Background):
    """Polls ``/ready`` in the background and keeps every answer."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = f"{url}/ready"
        self.interval = interval
        #: (monotonic time, status, body) of every answer; status 0 when the request failed.
        self.answers: list[tuple[float, int, Any]] = []

    async def _run(self) -> None:
        while True:
            try:
                status, body = await asyncio.to_thread(http_get_json, self.url, 2.0)
            except OSError as error:
                status, body = 0, str(error)
            self.answers.append((time.monotonic(), status, body))
            await asyncio.sleep(self.interval)

    @property
    def changes(self) -> list[tuple[float, int, Any]]:
        """The answers whose status differs from the one before."""
        return [
            answer for index, answer in enumerate(self.answers) if index == 0 or answer[1] != self.answers[index - 1][1]
        ]

    def first(self, status: int, after: float) -> tuple[float, Any] | None:
        """When ``/ready`` first answered ``status`` at or after ``after``, and its body."""
        for at, code, body in self.answers:
            if code == status and at >= after:
                return at, body
        return None

    async def wait_for(self, status: int, after: float, timeout: float) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while (found := self.first(status, after)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"/ready never answered {status} within {timeout}s: {self.changes[-3:]}")
            await asyncio.sleep(self.interval / 2)
        return found
