"""The chaos suite's fixtures, and the table of figures it prints when the run ends.

Every scenario test asks for `scenario`, gives it a title and a target, and records its figures
as it measures them. When the run ends, one table lists every scenario that ran: its figures, the
target it is held to, and whether the test passed. ``make chaos`` runs this directory alone; the
table also closes a full run.
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
    print_figures(terminalreporter, config.stash.get(_SCENARIOS, []), "chaos scenarios: figures")
