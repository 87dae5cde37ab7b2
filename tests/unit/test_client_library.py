"""The JavaScript client library's own unit tests (tests/js, ``node --test``), run with the rest.

Its reconnect, backoff, resume and subscription logic is checked there against a scripted
socket and hand-driven timers; this test runs them and fails with node's report when one fails.
Without node the test skips, and fails under CI=true (``.ci/run`` installs Debian's nodejs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.binaries import require_program

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = sorted((ROOT / "tests" / "js").glob("*.test.mjs"))


def test_the_client_library_passes_its_javascript_unit_tests():
    node = require_program("node", "nodejs")
    assert JS_TESTS, "no JavaScript tests found"
    # Files, not a directory: node 18 and node 22 read a directory argument differently.
    run = subprocess.run([node, "--test", *map(str, JS_TESTS)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "# fail 0" in report or "ℹ fail 0" in report, report[-3000:]
