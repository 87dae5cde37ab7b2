"""Under CI=true a skip of any kind fails the run; on a developer's machine it stays a skip.

CI installs everything the tests need, so there a skip can only hide a broken install or a
forgotten skip mark (tests/support/ci.py). Checked on a small suite of its own, run by pytest in
a child process with and without ``CI=true``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from siscom.dev.processes import clean_env

TESTS = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS.parent

SKIPPING = {
    "conftest.py": 'pytest_plugins = ["support.ci"]\n',
    "pytest.ini": "[pytest]\n",
    "test_calls.py": (
        "import pytest\n\n"
        "def test_skipped_by_a_call():\n    pytest.skip('no frobnicator')\n\n"
        "@pytest.mark.skip(reason='later')\ndef test_skipped_by_a_mark():\n    pass\n\n"
        "@pytest.fixture\ndef program():\n    pytest.skip('no program')\n\n"
        "def test_skipped_by_a_fixture(program):\n    pass\n\n"
        "def test_that_passes():\n    pass\n"
    ),
    "test_module.py": (
        "import pytest\n\npytest.importorskip('no_such_module_here')\n\ndef test_never_collected():\n    pass\n"
    ),
}


def run_suite(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    for name, text in SKIPPING.items():
        (tmp_path / name).write_text(text)
    env = clean_env({"PYTHONPATH": f"{TESTS}:{REPO_ROOT}", **({"CI": ci} if ci is not None else {})})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "--continue-on-collection-errors",
            "-rfEs",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_under_ci_every_kind_of_skip_fails_the_run(tmp_path):
    run = run_suite(tmp_path, "true")
    report = run.stdout + run.stderr
    assert run.returncode == 1, report
    assert "1 passed" in report and "skipped" not in report.splitlines()[-1], report
    for reason in ("no frobnicator", "later", "no program", "no_such_module_here"):
        assert any(
            "skipped under CI=true, where nothing may be skipped" in line and reason in line
            for line in report.splitlines()
        ), reason


def test_outside_ci_skips_stay_skips(tmp_path):
    run = run_suite(tmp_path, ci="false")
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "1 passed, 4 skipped" in report.splitlines()[-1], report
