"""The table a scenario prints, and the JSON it writes: each figure beside the baseline's, as a ratio."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

Value = float | int | str | None

#: The servers the gateway's figures are shown as ratios to, when they ran.
BASELINES = ("naive", "websockets")


@dataclass
class Row:
    """One figure of every target; ``ratio`` is the gateway's value over the baseline's."""

    label: str
    values: dict[str, Value]
    unit: str = ""
    digits: int = 1
    show_ratio: bool = True

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.values.get(numerator), self.values.get(denominator)
        if not self.show_ratio or not isinstance(top, int | float) or not isinstance(bottom, int | float):
            return None
        if bottom == 0:
            return None
        return top / bottom


@dataclass
class Verdict:
    """A target of the issue, and whether this run met it."""

    target: str
    met: bool
    detail: str


@dataclass
class Result:
    scenario: str
    params: dict[str, Any]
    targets: list[str]
    rows: list[Row] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    #: Everything measured, per target, for the JSON file.
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            entry = asdict(row)
            entry["ratio"] = row.ratio("siscom", "naive")
            for baseline in BASELINES[1:]:
                if baseline in self.targets:
                    entry[f"ratio_{baseline}"] = row.ratio("siscom", baseline)
            rows.append(entry)
        return {
            "scenario": self.scenario,
            "params": self.params,
            "targets": self.targets,
            "rows": rows,
            "verdicts": [asdict(verdict) for verdict in self.verdicts],
            "figures": self.figures,
            "notes": self.notes,
        }


def _format(value: Value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def render(result: Result) -> str:
    """A plain-text table: figure, unit, one column per target, then the ratio gateway/baseline."""
    baselines = [name for name in BASELINES if "siscom" in result.targets and name in result.targets]
    header = ["figure", "unit", *result.targets] + [f"siscom/{name}" for name in baselines]
    lines = [header]
    for row in result.rows:
        cells = [row.label, row.unit, *(_format(row.values.get(name), row.digits) for name in result.targets)]
        for name in baselines:
            ratio = row.ratio("siscom", name)
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        lines.append(cells)
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    out = [f"== {result.scenario}: " + ", ".join(f"{key}={value}" for key, value in result.params.items())]
    for number, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(width) if column < 2 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths))
            )
        )
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    if result.verdicts:
        out.append("")
        for verdict in result.verdicts:
            out.append(f"[{'met' if verdict.met else 'MISSED'}] {verdict.target}: {verdict.detail}")
    for note in result.notes:
        out.append(f"note: {note}")
    return "\n".join(out)
