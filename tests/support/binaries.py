"""Programs from the operating system that some tests drive: nginx, Chromium.

On a developer's machine a missing program skips its tests with the reason and the package to
install. Under CI (``CI=true``) it fails them instead: ``.ci/run`` installs these programs, so a
missing one means a broken install that a skip would hide.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

#: Where Debian's ``chromium`` package puts its launcher.
CHROMIUM = "/usr/bin/chromium"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)", pytrace=False)
    pytest.skip(reason)


def require_program(name: str, debian_package: str, *, path: str | None = None) -> str:
    """The full path of program `name` (or `path`, when given), else skip or fail the test.

    Programs in ``/usr/sbin`` (nginx) are found even when it is not on the PATH.
    """
    candidates = [path] if path is not None else [shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable(f"no {path or name} on this machine (apt-get install {debian_package})")


def require_module(name: str, pip_package: str) -> ModuleType:
    """Import Python module `name`, else skip or fail the test."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        unavailable(f"cannot import {name} ({error}); install the dev extra: pip install -e '.[dev]' ({pip_package})")
