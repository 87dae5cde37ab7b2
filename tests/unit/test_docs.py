"""The README documents every setting the service reads."""

from pathlib import Path

from siscom.config import describe_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_variable_is_in_the_readme_configuration_table():
    text = README.read_text()
    missing = [name for name, _, _ in describe_variables() if f"| `{name}` |" not in text]
    assert missing == []
