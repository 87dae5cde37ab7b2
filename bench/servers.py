"""The servers under test: how to start each one, watch its whole process tree, and stop it.

A :class:`Target` says how to run one server (the gateway, with or without workers, or the
naive baseline). A :class:`ServerUnderTest` is one running instance on a loopback port: it is
started from a small clean environment, waited for until ``/ready``, measured (CPU time and RSS
summed over the process and all its children, so worker processes count), and stopped by PID with
its process group (:class:`siscom.dev.processes.ChildProcess`), with SIGKILL for anything still
alive after the grace period.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.http import http_get_json, http_status
from siscom.dev.processes import ChildProcess, clean_env, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Holds the sitecustomize that logs a server's garbage-collector pauses (see its docstring).
GC_PROBE = Path(__file__).resolve().parent / "gcprobe"
_SEGS_OUT = re.compile(r"\bsegs_out:(\d+)")
_BYTES_SENT = re.compile(r"\bbytes_sent:(\d+)")
HOST = "127.0.0.1"


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
    #: How the clients read the stream: ``websocket`` or ``sse`` (Server-Sent Events).
    transport: str = "websocket"
    #: The clients offer permessage-deflate, as browsers do (WebSocket only).
    deflate: bool = False

    def command(self, bind: str) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args, "--bind", bind]


SISCOM = Target("siscom", "the gateway (siscom serve)", "siscom", ("serve",))
SISCOM_2_WORKERS = Target("siscom-w2", "the gateway, 2 workers", "siscom", ("serve", "--workers", "2"))
SISCOM_PLAIN = Target(
    "siscom-plain", "the gateway, write coalescing off", "siscom", ("serve",), env={"STREAM_COALESCE_WRITES": "false"}
)
#: The same gateway, its clients offering permessage-deflate as browsers do: each frame compressed
#: once for all of them (STREAM_WEBSOCKET_COMPRESSION=shared, the default).
SISCOM_DEFLATE = Target(
    "siscom-deflate", "the gateway, clients offering compression", "siscom", ("serve",), deflate=True
)
#: ... with the offer left to Hypercorn, which compresses each frame again for each client.
SISCOM_DEFLATE_EACH = Target(
    "siscom-deflate-each",
    "the gateway, compression per client (Hypercorn's)",
    "siscom",
    ("serve",),
    env={"STREAM_WEBSOCKET_COMPRESSION": "server"},
    deflate=True,
)
#: The same gateway with a write delay: frames routed within 50 ms of each other leave in one
#: write per client (STREAM_WRITE_DELAY_MILLISECONDS; the default, 0, writes after every batch).
SISCOM_DELAYED = Target(
    "siscom-delay",
    "the gateway, frames written every 50 ms",
    "siscom",
    ("serve",),
    env={"STREAM_WRITE_DELAY_MILLISECONDS": "50"},
)
#: The same gateway, its clients reading the stream over Server-Sent Events instead of WebSocket.
SISCOM_SSE = Target("siscom-sse", "the gateway, clients over SSE", "siscom", ("serve",), transport="sse")
NAIVE = Target("naive", "naive Quart fan-out (bench/baselines/naive.py)", "bench.baselines.naive", stats_path="/stats")
WEBSOCKETS = Target(
    "websockets",
    "bare websockets broadcast (bench/baselines/bare_websockets.py)",
    "bench.baselines.bare_websockets",
    stats_path="/stats",
)


class ServerUnderTest:
    def __init__(self, target: Target, env: Mapping[str, str], log_path: Path) -> None:
        self.target = target
        self.port = free_port(HOST)
        self.log_path = log_path
        #: Prefix of the servers' GC logs (one file per process: workers too).
        self.gc_log = log_path.with_suffix(".gc")
        self._env = clean_env(
            {
                "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{GC_PROBE}",
                "BENCH_GC_LOG": str(self.gc_log),
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
                **target.env,
                **env,
            }
        )
        self._child: ChildProcess | None = None
        self._psutil: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once ``/ready`` answers 200."""
        self._child = await asyncio.to_thread(
            ChildProcess.start,
            self.target.command(f"{HOST}:{self.port}"),
            lambda: http_status(f"{self.url}/ready") == 200,
            timeout=timeout,
            interval=0.1,
            name=self.target.name,
            log_path=self.log_path,
            env=self._env,
            cwd=self.log_path.parent,
        )
        self._psutil = psutil.Process(self._child.pid)

    async def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        status, body = await asyncio.to_thread(http_get_json, self.url + self.target.stats_path, timeout)
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
        return _cpu_seconds(self._tree())

    @property
    def pid(self) -> int:
        assert self._child is not None, "not started"
        return self._child.pid

    def rss_bytes(self) -> int:
        total = 0
        for process in self._tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def segments_out(self) -> tuple[int, int] | None:
        """TCP segments and bytes the server has sent on its port so far, over its open
        connections (the kernel's per-socket ``segs_out`` and ``bytes_sent``, from ``ss``); None
        when ``ss`` is not installed.

        The count of ``send()`` calls that reach the network: one per write of a frame or of a
        coalesced group of frames (loopback's segment size is far above any group of frames).
        ``/proc/PID/io`` ``syscw`` would be the obvious source, but Linux counts only the
        ``write()`` family there, never ``send()``/``sendto()``, which is how asyncio writes to a
        socket, so it reads 0 however many frames leave.
        """
        try:
            listing = subprocess.run(
                ["ss", "-Htin", "state", "established", f"( sport = :{self.port} )"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return (
            sum(int(found) for found in _SEGS_OUT.findall(listing)),
            sum(int(found) for found in _BYTES_SENT.findall(listing)),
        )

    def gc_pauses(self, t0: float, t1: float) -> list[tuple[int, float]] | None:
        """``(generation, seconds)`` of every garbage collection the server's processes ended
        between the POSIX times ``t0`` and ``t1`` (from the GC probe's logs; None without any)."""
        paths = list(self.gc_log.parent.glob(self.gc_log.name + ".*"))
        if not paths:
            return None
        pauses = []
        for path in paths:
            for line in path.read_text().splitlines():
                at, generation, seconds = line.split()
                if t0 <= float(at) < t1:
                    pauses.append((int(generation), float(seconds)))
        return pauses

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL whatever of the process group is still alive after ``timeout``."""
        if self._child is None:
            return None
        return self._child.stop(timeout)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time so far of the processes ``pids`` (those that still exist)."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return _cpu_seconds(processes)


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
