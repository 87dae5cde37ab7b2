"""The security suite's fixtures, and the table of figures it prints when the run ends.

Each test here plays an attacker against a real server process on loopback (a flood, a hostile
token, a crowd of non-readers) and measures what the service and its well-behaved clients see.
Tests ask for ``scenario``, give it a title and a target, and record their figures as they go;
when the run ends one table lists every scenario, its figures, its target and whether it passed,
as the chaos suite does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.scenarios import Scenario, print_figures, record_scenario

_SCENARIOS = pytest.StashKey[list[Scenario]]()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    yield from record_scenario(request, _SCENARIOS)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    print_figures(terminalreporter, config.stash.get(_SCENARIOS, []), "security scenarios: figures")
