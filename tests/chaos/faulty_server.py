"""``siscom``, with one fault of :mod:`chaos.faults` installed: for the chaos tests only.

    SISCOM_CHAOS_FAULT=consumer-crash python -m chaos.faulty_server serve --bind 127.0.0.1:8000

The product has no such hook: ``siscom serve`` never reads this variable nor imports this module.
The tests directory must be on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys

from chaos.faults import install
from siscom.cli import main

if __name__ == "__main__":
    install(os.environ["SISCOM_CHAOS_FAULT"])
    sys.exit(main())
