"""The serving process's garbage-collector settings (siscom.cli.settle_collector).

Checked in a child process: the settings are process-wide, and the test process's own must not
change."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from siscom.cli import GC_YOUNG_THRESHOLD, settle_collector
start_up = [["made before"]]
settle_collector()
young = [["made after"]]
gc.collect()
walked = gc.get_objects()
print(
    gc.get_threshold()[0] == GC_YOUNG_THRESHOLD,
    not any(o is start_up for o in walked),
    any(o is young for o in walked),
)
"""


def test_a_serving_process_collects_young_objects_rarely_and_leaves_its_start_up_objects_out_of_full_passes():
    """Full passes stop the event loop for as long as they walk; they must be rare and short, and
    what is made after the start-up is still collected."""
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    threshold, start_up_frozen, later_walked = result.stdout.split()
    assert threshold == "True", "young collections every GC_YOUNG_THRESHOLD allocations"
    assert start_up_frozen == "True", "start-up objects are left out of the collector's passes"
    assert later_walked == "True", "objects made after the start-up are collected as usual"
