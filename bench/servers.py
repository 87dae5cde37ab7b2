"""The servers under test: how to start each one, watch its whole process tree, and stop it.

A :class:`Target` says how to run one server (the gateway, with or without workers, or the
naive baseline). A :class:`ServerUnderTest` is one running instance on a loopback port: it is
started from a small clean environment, waited for until ``/ready``, measured (CPU time and RSS
summed over the process and all its children, so worker processes count), and stopped by PID,
with SIGKILL for anything still alive after the grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from siscom.dev.broker import free_port
from siscom.dev.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

#: Passed through from the harness's environment: what a process needs to run at all.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


@dataclass(frozen=True)
class Target:
    """How to run one server under test."""

    name: str
    description: str
    module: str
    args: tuple[str, ...] = ()
    #: Path of the JSON counters, and the keys of the records and connections counts in it.
    stats_path: str = "/api/v1/stream/stats"
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, bind: str) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args, "--bind", bind]


SISCOM = Target("siscom", "the gateway (siscom serve)", "siscom", ("serve",))
SISCOM_2_WORKERS = Target("siscom-w2", "the gateway, 2 workers", "siscom", ("serve", "--workers", "2"))
NAIVE = Target("naive", "naive Quart fan-out (bench/baselines/naive.py)", "bench.baselines.naive", stats_path="/stats")


def http_get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


class ServerUnderTest:
    def __init__(self, target: Target, env: Mapping[str, str], log_path: Path) -> None:
        self.target = target
        self.port = free_port(HOST)
        self.log_path = log_path
        self._env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        self._env.update({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"})
        self._env.update(target.env)
        self._env.update(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._psutil: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once ``/ready`` answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            self.target.command(f"{HOST}:{self.port}"),
            env=self._env,
            cwd=self.log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._psutil = psutil.Process(self._process.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                status, _ = await asyncio.to_thread(http_get_json, f"{self.url}/ready", 1.0)
            except OSError:
                status = 0
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.target.name} not ready within {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def stats(self) -> dict[str, Any]:
        status, body = await asyncio.to_thread(http_get_json, self.url + self.target.stats_path)
        if status != 200:
            raise RuntimeError(f"{self.target.stats_path} answered {status}")
        return body

    def _tree(self) -> list[psutil.Process]:
        if self._psutil is None:
            return []
        try:
            return [self._psutil, *self._psutil.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server and its children so far."""
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self._tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL whatever of the tree is still alive after ``timeout``."""
        process = self._process
        if process is None:
            return None
        children = self._tree()[1:]
        terminate(process, timeout)
        _, alive = psutil.wait_procs(children, timeout=timeout)
        for child in alive:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time so far of the processes ``pids`` (those that still exist)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class ResourceSampler:
    """Samples a server's RSS every ``interval`` seconds while running, for 'is memory flat?'."""

    def __init__(self, server: ServerUnderTest, interval: float = 0.5) -> None:
        self._server = server
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ResourceSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait((self._task,))

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self._server.rss_bytes()))
            await asyncio.sleep(self._interval)
