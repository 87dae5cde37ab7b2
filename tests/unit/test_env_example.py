"""``deploy/.env.example`` lists every setting with its default, straight from the settings table.

The file is generated: when a setting is added or changed, this test fails, and running this
module as a script rewrites the file::

    python tests/unit/test_env_example.py
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from siscom.config import describe_variables  # noqa: E402

ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
COMPOSE = REPO_ROOT / "deploy" / "docker-compose.yml"

#: Variables only docker-compose.yml reads (for nginx and the published port), with their meaning.
COMPOSE_ONLY = {
    "SISCOM_HTTP_PORT": "port on the host where nginx serves the gateway",
    "SISCOM_NGINX_READ_TIMEOUT": (
        "how long nginx lets a stream stay silent before cutting it; keep it above STREAM_KEEPALIVE_SECONDS"
    ),
}

HEADER = """\
# siscom-stream: every setting, with its default.
#
# Copy this file to .env and uncomment what you change. `siscom serve` reads .env in its working
# directory; docker compose reads deploy/.env for docker-compose.yml. The environment wins over
# the file, and an empty value means the default.
#
# Generated from the settings in siscom/config.py: python tests/unit/test_env_example.py
"""

_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")


def compose_defaults(text: str) -> dict[str, str]:
    """``NAME -> default`` for each ``${NAME:-default}`` in the compose file (non-empty wins)."""
    defaults: dict[str, str] = {}
    for name, default in _INTERPOLATION.findall(text):
        if default or name not in defaults:
            defaults[name] = default
    return defaults


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=98, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def render(compose_text: str) -> str:
    compose = compose_defaults(compose_text)
    lines = [HEADER]
    for name, default, meaning in describe_variables():
        lines += _comment(meaning)
        if compose.get(name) and compose[name] != default:
            lines += _comment(f"(docker-compose.yml: {compose[name]} unless set here)")
        lines += [f"#{name}={default}", ""]
    lines += ["# -- docker-compose.yml only --", ""]
    for name, meaning in COMPOSE_ONLY.items():
        lines += _comment(meaning)
        lines += [f"#{name}={compose.get(name, '')}", ""]
    return "\n".join(lines)


def test_the_env_example_lists_every_setting_with_its_default():
    expected = render(COMPOSE.read_text())
    assert ENV_EXAMPLE.read_text() == expected, "deploy/.env.example is stale: python tests/unit/test_env_example.py"


def test_every_line_names_a_setting_or_a_compose_variable():
    settings = {name for name, _, _ in describe_variables()}
    names = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert sorted(names) == sorted(settings | set(COMPOSE_ONLY))


def test_compose_reads_no_variable_that_the_example_leaves_out():
    settings = {name for name, _, _ in describe_variables()}
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert read - settings == set(COMPOSE_ONLY)


if __name__ == "__main__":
    ENV_EXAMPLE.write_text(render(COMPOSE.read_text()))
    print(f"wrote {ENV_EXAMPLE.relative_to(REPO_ROOT)}")
