"""The service under test, run as a real process: ``python -m siscom serve``.

Configuration goes in through environment variables only, as operators set
it.  The process starts from a small, clean environment so that settings of
the developer's shell (or a ``.env`` file in the working tree) cannot leak
into a test.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.http import http_status
from siscom.dev.processes import ChildProcess, OwnsChild, StartFailed, clean_env, free_port, log_tail, read_log

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_ENV = {
    "KAFKA_FETCH_MAX_WAIT_MS": "10",  # the test broker holds fetches for half of this
    "LOG_LEVEL": "DEBUG",
    # Overload shedding judges the event loop's lag, which on a shared test machine says more
    # about the machine than about the server; only the tests of shedding turn it on.
    "STREAM_SHED_LAG_SECONDS": "0",
    "PYTHONUNBUFFERED": "1",
}


class LoopbackHttp(OwnsChild):
    """A process that serves HTTP and WebSocket on ``host:port``, with the URLs to reach it."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/api/v1/stream") -> str:
        """``ws://`` URL of `path`, which may carry a (percent-encoded) query."""
        return f"ws://{self.host}:{self.port}{path}"


class ServerProcess(LoopbackHttp):
    """One server process on a loopback port, logging to `log_path`."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] = "server.log",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = Path(log_path)
        self.args = list(args)
        # The source tree first, so the checkout is tested even when an
        # older copy is installed.
        self.env = clean_env({"PYTHONPATH": str(REPO_ROOT), **DEFAULT_ENV, **(env or {})})

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "siscom", "serve", "--bind", f"{self.host}:{self.port}", *self.args]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Spawn the server and return once ``GET /health`` answers 200."""
        if self._child is not None:
            raise RuntimeError("server already started")
        try:
            self._child = ChildProcess.start(
                self.command,
                lambda: http_status(f"{self.url}/health") == 200,
                timeout=timeout,
                interval=0.05,
                name="server",
                log_path=self.log_path,
                env=self.env,
                # Not the checkout: a developer's .env there must not apply.
                cwd=self.log_path.parent,
            )
        except StartFailed as failed:
            raise RuntimeError(str(failed)) from None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` and wait for the exit; SIGKILL after `timeout`.

        Worker processes, if the server forked any, are ended too. Returns the
        exit status: negative for a signal, so a server that had to be killed
        shows as ``-9``.
        """
        if self._child is None:
            return None
        return self._child.stop(timeout, sig)

    def kill(self) -> int | None:
        """SIGKILL the server, as the kernel's OOM killer would."""
        return self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return read_log(self.log_path)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)
