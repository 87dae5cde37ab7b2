"""The security suite's fixtures, and the table of figures it prints when the run ends.

Each test here plays an attacker against a real server process on loopback (a flood, a hostile
token, a crowd of non-readers) and measures what the service and its well-behaved clients see.
Tests ask for ``scenario``, give it a title and a target, and record their figures as they go;
when the run ends one table lists every scenario, its figures, its target and whether it passed,
as the chaos suite does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

_SCENARIOS = pytest.StashKey[list["Scenario"]]()


@dataclass
class Scenario:
    """What one security test measured, for the summary table."""

    test: str
    title: str = ""
    target: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)
    outcome: str = "not run"

    def figure(self, name: str, value: object) -> None:
        """Record a figure; also printed, so a failing test shows what it had measured."""
        self.figures.append((name, str(value)))
        print(f"[{self.title or self.test}] {name}: {value}")


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    record = Scenario(request.node.nodeid)
    yield record
    # The root conftest keeps each phase's report on the item.
    call = getattr(request.node, "report_call", None)
    record.outcome = call.outcome if call is not None else "error"
    request.config.stash.setdefault(_SCENARIOS, []).append(record)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    scenarios = sorted(config.stash.get(_SCENARIOS, []), key=lambda s: s.title or s.test)
    if not scenarios:
        return
    terminalreporter.section("security scenarios: figures")
    rows = [("scenario", "figure", "value", "target", "result")]
    for record in scenarios:
        result = {"passed": "PASS", "failed": "FAIL", "skipped": "skip"}.get(record.outcome, record.outcome)
        for index, (name, value) in enumerate(record.figures or [("(no figures)", "")]):
            first = index == 0
            rows.append(
                (
                    record.title or record.test if first else "",
                    name,
                    value,
                    record.target if first else "",
                    result if first else "",
                )
            )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        terminalreporter.write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            terminalreporter.write_line("  ".join("-" * width for width in widths))
