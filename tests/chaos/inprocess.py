"""The gateway served in the test's own event loop, by Hypercorn, as ``siscom serve`` serves it.

For tests that must look inside while real clients talk to it over real sockets: count the
loop's tasks, make an actor fail on purpose (a gateway built with faulty actors), read the
supervision tree. Its log records are kept
(INFO and up), so a test can check what was logged, and how much.
"""

from __future__ import annotations

import asyncio
import logging
import time

from support.http import http_get

from siscom.app import create_app, gateway_of
from siscom.cli import hypercorn_config
from siscom.config import Settings
from siscom.dev.broker import free_port
from siscom.gateway import Gateway


class LogRecorder(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [record for record in self.records if record.levelno >= level]

    def with_traceback(self) -> list[logging.LogRecord]:
        return [record for record in self.records if record.exc_info]

    def text(self) -> str:
        return "\n".join(self.format(record) for record in self.records)


class InProcessServer:
    """``async with InProcessServer(settings) as server``: serving until the block ends."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", gateway: Gateway | None = None) -> None:
        self.app = create_app(settings, gateway)
        self.gateway = gateway_of(self.app)
        self.host = host
        self.port = free_port(host)
        self.log = LogRecorder()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._root_level = logging.NOTSET

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/api/v1/stream") -> str:
        return f"ws://{self.host}:{self.port}{path}"

    def log_text(self) -> str:
        return self.log.text()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def __aenter__(self) -> InProcessServer:
        from hypercorn.asyncio import serve

        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self.log)
        config = hypercorn_config(f"{self.host}:{self.port}")
        self._task = asyncio.create_task(serve(self.app, config, shutdown_trigger=self._stop.wait), name="hypercorn")
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(self._healthy):
            if self._task.done():
                self._task.result()
                raise RuntimeError("the server stopped before it was healthy")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy within 20 s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            return http_get(f"{self.url}/health", timeout=1.0)[0] == 200
        except OSError:
            return False

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(self._task, 20)
        finally:
            root = logging.getLogger()
            root.removeHandler(self.log)
            root.setLevel(self._root_level)
