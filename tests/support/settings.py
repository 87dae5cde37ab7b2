"""Loading settings from a given environment only (no process environment, no .env file)."""

from __future__ import annotations

import pytest

from siscom.config import ConfigError, Settings


def load(**environ: str) -> Settings:
    return Settings.from_env(environ, env_file=None)


def error_for(**environ: str) -> ConfigError:
    """The error loading ``environ`` raises; fails the test if it loads."""
    with pytest.raises(ConfigError) as caught:
        load(**environ)
    return caught.value
