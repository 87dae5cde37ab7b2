"""Figures that a suite of scenario tests records, and the table it prints when the run ends.

The chaos and security suites each keep their own list (a stash key of their own) and print
their own table; what a scenario is and how the table looks is shared here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Scenario:
    """What one scenario test measured, for the summary table."""

    test: str
    title: str = ""
    target: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)
    outcome: str = "not run"

    def figure(self, name: str, value: object) -> None:
        """Record a figure; also printed, so a failing test shows what it had measured."""
        self.figures.append((name, str(value)))
        print(f"[{self.title or self.test}] {name}: {value}")


def record_scenario(request: pytest.FixtureRequest, key: pytest.StashKey[list[Scenario]]) -> Iterator[Scenario]:
    """The body of a suite's ``scenario`` fixture: the record, kept under ``key`` with its outcome."""
    record = Scenario(request.node.nodeid)
    yield record
    # The root conftest keeps each phase's report on the item.
    call = getattr(request.node, "report_call", None)
    record.outcome = call.outcome if call is not None else "error"
    request.config.stash.setdefault(key, []).append(record)


def print_figures(terminalreporter: pytest.TerminalReporter, scenarios: list[Scenario], heading: str) -> None:
    """One table of every scenario that ran: its figures, its target and whether it passed."""
    scenarios = sorted(scenarios, key=lambda s: s.title or s.test)
    if not scenarios:
        return
    terminalreporter.section(heading)
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
