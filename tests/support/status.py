"""Waiting on what a server reports about itself: ``/ready`` and ``/api/v1/stream/stats``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from .http import http_get_json


async def wait_ready(server: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``/ready`` until it answers 200; return its body. Fails with the server's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(http_get_json, f"{server.url}/ready")
        if status == 200:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/ready still {status} after {timeout}s: {body}\n{server.log_tail()}")
        await asyncio.sleep(0.1)


def stats(server: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The server's counters, from ``/api/v1/stream/stats`` (``headers`` may carry a token)."""
    status, body = http_get_json(f"{server.url}/api/v1/stream/stats", headers=headers)
    assert status == 200, body
    return body


async def wait_stats(
    server: Any,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the stats until `predicate` accepts them; return them."""
    deadline = time.monotonic() + timeout
    while True:
        body = await asyncio.to_thread(stats, server, headers)
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"stats never matched: {body}")
        await asyncio.sleep(0.1)
