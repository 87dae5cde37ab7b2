"""Every metric is in the registry, and docs/metrics.md's table is the registry's."""

from __future__ import annotations

import re
from pathlib import Path

from siscom.metrics import Metric, metrics_table

REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

# A metric named by a string literal instead of a registry member: `metrics.incr("records")`.
_LITERAL_CALL = re.compile(r"\.(?:incr|gauge|timing)\(\s*[\"']")


def test_the_metrics_doc_statsd_table_is_generated_from_the_registry():
    """Regenerate with `python tests/unit/test_metric_names.py` after changing the registry."""
    assert metrics_table() in METRICS_DOC.read_text()


def test_code_names_metrics_only_through_the_registry():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in (REPO_ROOT / "siscom").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _LITERAL_CALL.search(line)
    ]
    assert offenders == []


def test_a_metric_is_its_name_as_a_string():
    assert Metric.RECORDS == "records" and f"{Metric.RECORDS}" == "records"
    assert len({m.value for m in Metric}) == len(Metric)


def _rewrite_doc() -> None:
    text = METRICS_DOC.read_text()
    start = text.index("| metric | type | what it counts |")
    end = text.index("\n\n", start) + 1
    METRICS_DOC.write_text(text[:start] + metrics_table() + text[end:])


if __name__ == "__main__":
    _rewrite_doc()
