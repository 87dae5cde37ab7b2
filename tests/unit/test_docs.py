"""``docs/configuration.md`` documents every setting the service reads, straight from the settings table.

The table is generated: when a setting is added or changed, this test fails, and running this
module as a script rewrites the table in place (the prose around it is kept)::

    python tests/unit/test_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from siscom.config import describe_variables  # noqa: E402

CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
HEADER = "| variable | default | meaning — allowed values |"


def configuration_table() -> str:
    """The Markdown table of every setting, in the settings table's order."""
    rows = [HEADER, "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{default}` | {meaning} |" for name, default, meaning in describe_variables()]
    return "\n".join(rows) + "\n"


def test_the_configuration_table_is_generated_from_the_settings():
    assert configuration_table() in CONFIGURATION.read_text(), "stale: python tests/unit/test_docs.py"


def test_every_variable_is_in_the_configuration_table():
    text = CONFIGURATION.read_text()
    missing = [name for name, _, _ in describe_variables() if f"| `{name}` |" not in text]
    assert missing == []


def _rewrite() -> None:
    text = CONFIGURATION.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start) + 1 if "\n\n" in text[start:] else len(text)
    CONFIGURATION.write_text(text[:start] + configuration_table() + text[end:])


if __name__ == "__main__":
    _rewrite()
    print(f"wrote {CONFIGURATION.relative_to(REPO_ROOT)}")
