"""Under CI (``CI=true``) nothing may be skipped: a skipped test or module is reported as failed.

``.ci/run`` installs every program and package the tests need, so a skip there means a broken
install (or a skip mark someone forgot) hiding a test. Helpers that find a missing program
already fail under CI with a precise message (:mod:`support.binaries`); this plugin catches every
other way to skip: ``pytest.skip``, skip marks, ``pytest.importorskip``. Loaded by
``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def _fail_instead(report: pytest.TestReport | pytest.CollectReport) -> None:
    longrepr: Any = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where nothing may be skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and under_ci():
        _fail_instead(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    if report.skipped and under_ci():
        _fail_instead(report)
    return report
