"""Child processes on loopback ports, for the dev broker, the tests and the benchmarks.

A :class:`ChildProcess` is one command run in a process group of its own
(``start_new_session``), its output appended to a log file. It is started, waited for until a
readiness check passes (a port that accepts connections, an HTTP status, a log line: any
callable, such as :func:`port_accepts`), and stopped by its PID together with every
process it forked: ``hypercorn -w 1`` and ``siscom serve --workers N`` fork workers that would
keep serving if only their parent ended.

Only the standard library is used here: this module ships with the package, and ``psutil`` is
a development dependency.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "INHERITED_ENV",
    "ChildProcess",
    "ProcessExited",
    "StartFailed",
    "clean_env",
    "free_port",
    "group_members",
    "log_tail",
    "port_accepts",
    "port_bindable",
    "read_log",
    "terminate",
]

#: Passed through from the parent's environment by :func:`clean_env`: what a process needs to
#: run at all, nothing that configures the service.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")

_POLL_INTERVAL = 0.02
#: How long SIGKILLed processes get to vanish from the process table.
_KILL_WAIT = 5.0


class ProcessExited(RuntimeError):
    """The process ended while it was being waited for."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"exited with {returncode}")
        self.returncode = returncode


class StartFailed(RuntimeError):
    """A process exited, or was not ready in time, while it was starting."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago.

    The kernel picks it; the socket is closed again so a child process can bind it. Another
    process could take it in between, which is why readiness checks also watch that the child
    itself is still alive.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True if ``host:port`` could be bound now, with ``SO_REUSEADDR`` as servers bind it.

    Connections of an earlier listener lingering in TIME_WAIT do not count as "taken".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def clean_env(
    overrides: Mapping[str, object] | None = None, *, inherit: Iterable[str] = INHERITED_ENV
) -> dict[str, str]:
    """A small environment: the variables named in `inherit` that are set here, plus `overrides`.

    Settings of the developer's shell cannot leak into the child this way.
    """
    env = {name: os.environ[name] for name in inherit if name in os.environ}
    env.update({name: str(value) for name, value in (overrides or {}).items()})
    return env


def read_log(path: str | os.PathLike[str]) -> str:
    """The text of a log file so far; empty if it does not exist (yet)."""
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(path: str | os.PathLike[str], lines: int = 60) -> str:
    """The last `lines` lines of a log file, for error messages."""
    return "\n".join(read_log(path).splitlines()[-lines:])


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group `pgid` (zombies do not count).

    An orphaned zombie stays in its group until an init process reaps it, and not every
    container's PID 1 does; so where ``/proc`` exists its entries are read, and elsewhere the
    kernel is only asked whether the group has any member at all.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        return [pgid]
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # proc(5): "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        fields = text[text.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def terminate(process: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to one process unless it has exited, wait up to ``timeout``, then SIGKILL.

    Returns the exit status (negative for a signal, so a process that had to be killed shows
    -9). Processes it forked are not touched: :class:`ChildProcess` stops those too.
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ChildProcess:
    """One running command, leader of a process group of its own, its output in `log_path`.

    Started at construction; :meth:`stop` ends it and everything it forked. One object is one
    process: to run the command again, make another.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.command = list(command)
        self.log_path = Path(log_path) if log_path is not None else None
        log: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Append: one file tells the whole story across restarts.
            log = open(self.log_path, "ab")
        try:
            self._process: subprocess.Popen[bytes] = subprocess.Popen(
                self.command,
                env=None if env is None else dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if self.log_path is not None else subprocess.DEVNULL,
                # Its own process group, so that stop() reaches whatever it forks, and a Ctrl-C
                # in the developer's terminal reaches only the parent, which stops it in order.
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):
                log.close()  # the child has its own copy

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        ready: Callable[[], bool],
        *,
        timeout: float,
        interval: float = _POLL_INTERVAL,
        name: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ChildProcess:
        """Spawn `command` and return once ``ready()`` (tried every `interval` s) is true.

        Raises :class:`StartFailed`, with the end of the log, if the process exits first or is
        not ready within `timeout` (then it is killed, with its group).
        """
        child = cls(command, log_path=log_path, env=env, cwd=cwd)
        name = name or Path(child.command[0]).name
        try:
            if child.wait_until(ready, timeout, interval=interval):
                return child
        except ProcessExited as exited:
            child.stop(0.0)  # reaps it, and ends anything it forked
            raise StartFailed(f"{name} exited with {exited.returncode} before it was ready{child._tail()}") from None
        except BaseException:
            child.kill()
            raise
        child.kill()
        raise StartFailed(f"{name} not ready within {timeout:g} s{child._tail()}")

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._process.returncode}"
        return f"<ChildProcess pid={self.pid} {state}: {' '.join(self.command)}>"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the leader exists (also while paused)."""
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The leader's exit status, or None while it runs."""
        return self._process.poll()

    def wait_until(self, ready: Callable[[], bool], timeout: float, *, interval: float = _POLL_INTERVAL) -> bool:
        """Poll ``ready()`` until it is true (True) or `timeout` passes (False).

        Raises :class:`ProcessExited` if the process ends first.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise ProcessExited(self._process.returncode)
            if ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the whole group (SIGSTOP and SIGCONT freeze and thaw all of it)."""
        if self.running:
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Send `sig` to the leader, wait up to `timeout`, then SIGKILL whatever of the group is left.

        The leader alone gets `sig`, as a service manager stopping it by its PID would do: it
        stops its own workers in order (Hypercorn 0.18 run.py sets a shutdown event its workers
        poll; they install no SIGTERM handler of their own, so a signal to the whole group would
        kill them mid-drain, and their clients would get no close frame). Processes of the group
        still alive when the leader has gone, or when `timeout` has passed, are killed. Returns the
        leader's exit status: negative for a signal, so a process that had to be killed shows -9.
        """
        deadline = time.monotonic() + timeout
        if self._process.poll() is None:
            if sig == signal.SIGKILL:
                self._killpg()
            else:
                # A paused member would keep the signal pending until it runs again.
                self.send_signal(signal.SIGCONT)
                self._process.send_signal(sig)
            try:
                self._process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._killpg()
        self._process.wait()
        self._wait_group_gone(deadline)
        self._killpg()
        self._wait_group_gone(time.monotonic() + _KILL_WAIT)
        return self._process.returncode

    def kill(self) -> int:
        """SIGKILL the whole group at once, as a crash would end it."""
        return self.stop(0.0, signal.SIGKILL)

    def _wait_group_gone(self, deadline: float) -> None:
        while group_members(self.pid) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)

    def _killpg(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_text(self) -> str:
        """Everything written to the log so far."""
        return read_log(self.log_path) if self.log_path is not None else ""

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines) if self.log_path is not None else ""

    def _tail(self) -> str:
        tail = self.log_tail()
        return f":\n{tail}" if tail else (f" (see {self.log_path})" if self.log_path else "")


class OwnsChild:
    """A helper that runs one :class:`ChildProcess` at a time (a broker, a server, a proxy) and
    says, between runs too, which process that is and whether it still runs."""

    _child: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        """PID of the current process, or None when there is none."""
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        """True while the process exists (also while paused)."""
        return self._child is not None and self._child.running

    def start(self) -> object:
        """Start the process and return once it is ready (each helper knows how)."""
        raise NotImplementedError

    def stop(self) -> object:
        """End the process, if there is one (each helper knows how)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
