"""prometheus_client's multiprocess switch, which siscom/prometheus.py reads, checked.

``PrometheusMetrics`` asks ``prometheus_client.values.ValueClass._multiprocess`` (a private class
attribute) whether values go to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``; on that
answer it leaves its metrics out of the rendered registry and adds a ``MultiProcessCollector``.
The rules relied on, each in a fresh interpreter because the choice is made once, at import:

- the attribute exists and is ``False`` without the variable, ``True`` with it;
- it is chosen when ``prometheus_client.values`` is first imported: set later, the variable
  changes nothing (why ``siscom serve`` puts it in each worker's environment before the start);
- in that mode a count lands in a file of the directory, and a scrape by another process adds it in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from contracts.test_dependency_contracts import broken

ROOT = Path(__file__).resolve().parents[2]
USE = "prometheus_client.values.ValueClass._multiprocess, chosen from PROMETHEUS_MULTIPROC_DIR at import"

#: Imports prometheus_client (after setting the variable, when told to), then reports.
PROBE = """
import json, os, sys
late = sys.argv[1] if len(sys.argv) > 1 else None
from prometheus_client import values
if late:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = late
print(json.dumps({"flag": repr(getattr(values.ValueClass, "_multiprocess", "<missing>"))}))
"""

#: Counts ``records`` through the project's metrics and prints what a scrape of this process shows.
COUNT = """
import json, sys
from siscom.metric_names import Metric
from siscom.prometheus import PrometheusMetrics
metrics = PrometheusMetrics()
metrics.incr(Metric.RECORDS, int(sys.argv[1]))
body, _ = metrics.exposition()
line = next(l for l in body.decode().splitlines() if l.startswith("siscom_records_total "))
print(json.dumps({"multiprocess": metrics.multiprocess, "records": float(line.split()[1])}))
"""


def run(code: str, *args: str, directory: Path | None = None) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (ended by its own exit, or by the timeout)."""
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_the_directory_the_flag_exists_and_is_false():
    found = run(PROBE)["flag"]
    assert found == "False", broken("prometheus-client", USE, found)


def test_with_the_directory_in_the_environment_at_start_the_flag_is_true(tmp_path):
    found = run(PROBE, directory=tmp_path)["flag"]
    assert found == "True", broken("prometheus-client", USE, found)


def test_the_directory_set_after_the_import_changes_nothing(tmp_path):
    found = run(PROBE, str(tmp_path))["flag"]
    assert found == "False", broken("prometheus-client", USE + " (and only then)", found)


def test_in_multiprocess_mode_a_scrape_adds_up_what_every_process_counted(tmp_path):
    first = run(COUNT, "3", directory=tmp_path)
    assert first == {"multiprocess": True, "records": 3.0}
    assert any(name.startswith("counter_") for name in os.listdir(tmp_path)), os.listdir(tmp_path)
    # Another process (a second worker) sees the first one's count in its own scrape.
    assert run(COUNT, "2", directory=tmp_path) == {"multiprocess": True, "records": 5.0}


def test_in_single_process_mode_a_scrape_shows_only_this_process(tmp_path):
    assert run(COUNT, "3") == {"multiprocess": False, "records": 3.0}
    assert os.listdir(tmp_path) == []
