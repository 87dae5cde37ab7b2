"""The service under test, run as a real process: ``python -m siscom serve``.

Configuration goes in through environment variables only, as operators set
it.  The process starts from a small, clean environment so that settings of
the developer's shell (or a ``.env`` file in the working tree) cannot leak
into a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from siscom.dev.broker import free_port
from siscom.dev.processes import terminate

from .http import http_get

REPO_ROOT = Path(__file__).resolve().parents[2]

# Passed through from the test runner's environment: what a process needs to
# run at all, nothing that configures the service.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")

DEFAULT_ENV = {
    "KAFKA_FETCH_MAX_WAIT_MS": "10",  # the test broker holds fetches for half of this
    "LOG_LEVEL": "DEBUG",
    "PYTHONUNBUFFERED": "1",
}


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_survivors(processes: list[psutil.Process], grace: float) -> None:
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5.0)


class ServerProcess:
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
        self.env = self._build_env(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @staticmethod
    def _build_env(overrides: Mapping[str, str]) -> dict[str, str]:
        env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        # The source tree first, so the checkout is tested even when an
        # older copy is installed.
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.update(DEFAULT_ENV)
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "siscom", "serve", "--bind", f"{self.host}:{self.port}", *self.args]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/api/v1/stream") -> str:
        """``ws://`` URL of `path`, which may carry a (percent-encoded) query."""
        return f"ws://{self.host}:{self.port}{path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Spawn the server and return once ``GET /health`` answers 200."""
        if self._process is not None:
            raise RuntimeError("server already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            self.command,
            env=self.env,
            # Not the checkout: a developer's .env there must not apply.
            cwd=self.log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                returncode = self._process.returncode
                self._close_log()
                raise RuntimeError(
                    f"server exited with {returncode} before it was healthy:\n{self.log_tail()}"
                )
            if self._healthy():
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"server not healthy within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            status, _ = http_get(f"{self.url}/health", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` and wait for the exit; SIGKILL after `timeout`.

        Returns the exit status: negative for a signal, so a server that had
        to be killed shows as ``-9``.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            # Worker processes, if the server forked any, are ended too: a
            # killed parent would leave them running.
            children = _children(process.pid)
            terminate(process, timeout, sig)
            _kill_survivors(children, grace=0.0 if sig == signal.SIGKILL else timeout)
        self._close_log()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL the server, as the kernel's OOM killer would."""
        return self.stop(signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
