"""The chaos suite's fixtures, and the table of figures it prints when the run ends.

Every scenario test asks for `scenario`, gives it a title and a target, and records its figures
as it measures them. When the run ends, one table lists every scenario that ran: its figures, the
target it is held to, and whether the test passed. ``make chaos`` runs this directory alone; the
table also closes a full run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from support.scenarios import Scenario, print_figures, record_scenario
from support.server import ServerProcess
from support.status import wait_ready

from siscom.dev.broker import TansuBroker, create_topics

_SCENARIOS = pytest.StashKey[list[Scenario]]()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    yield from record_scenario(request, _SCENARIOS)


@pytest.fixture
def broker_and_server(
    broker_factory: Callable[..., TansuBroker], server_factory: Callable[..., ServerProcess]
) -> Callable[..., Awaitable[tuple[TansuBroker, ServerProcess]]]:
    """``await broker_and_server(topic, partitions, **settings)``: a broker of the test's own
    (these tests kill, pause or load it) with `topic` on it, and a ready server reading it."""

    async def start(topic: str, partitions: int = 1, **settings: str) -> tuple[TansuBroker, ServerProcess]:
        broker = broker_factory()
        await create_topics(broker.bootstrap, {topic: partitions})
        server = server_factory({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, **settings})
        await wait_ready(server)
        return broker, server

    return start


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    print_figures(terminalreporter, config.stash.get(_SCENARIOS, []), "chaos scenarios: figures")
