"""Every metric the code sends to StatsD is documented in the README's Metrics section."""

from __future__ import annotations

import re
from pathlib import Path

from siscom.metrics import COUNTERS

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

# `metrics.incr("records", ...)`, `self._metrics.gauge("connections", ...)`, ...
_CALL = re.compile(r"\.(?:incr|gauge|timing)\(\s*\"([a-z_]+)\"")
# Counter names passed around in tuples, e.g. SECURITY_COUNTERS = ("origin_refusals", ...)
_TUPLE = re.compile(r"^[A-Z_]*COUNTERS\s*=\s*\((.*?)\)", re.MULTILINE | re.DOTALL)


def metric_names() -> set[str]:
    names = set(COUNTERS)
    for path in (REPO_ROOT / "siscom").rglob("*.py"):
        text = path.read_text()
        names.update(_CALL.findall(text))
        for body in _TUPLE.findall(text):
            names.update(re.findall(r"\"([a-z_]+)\"", body))
    return names


def metrics_section() -> str:
    text = README.read_text()
    start = text.index("\n## Metrics\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_names_are_found_in_the_code():
    assert {"records", "frames_sent", "connections", "partition_lag", "latency"} <= metric_names()


def test_every_metric_has_a_row_in_the_readme():
    section = metrics_section()
    assert sorted(name for name in metric_names() if f"| `{name}` |" not in section) == []
