"""The load harness runs end to end (tiny loads, seconds long), so that it cannot rot.

Nothing here judges performance: the figures of a smoke run on a busy machine mean nothing. What
is checked is that every scenario runs both servers, counts deliveries consistently (never more
than the subscriptions imply) and writes its figures, and that it leaves no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest
from support.server import REPO_ROOT


def run_module(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the repository, in a plain environment; asserted to exit 0."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def run_bench(tmp_path, scenario: str, targets: str | None, timeout: float, *options: str) -> tuple[str, dict]:
    """``python -m bench SCENARIO --smoke --targets TARGETS [OPTIONS]``: what it printed and its
    JSON, once it exited 0 leaving no process behind."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    out = tmp_path / "figures.json"
    chosen = ("--targets", targets) if targets else ()
    args = [scenario, "--smoke", *chosen, *options, "--json", str(out), "--workdir", str(tmp_path / "logs")]
    completed = run_module("bench", *args, timeout=timeout)
    # Servers, client processes and the broker were all stopped.
    leftovers = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
    assert leftovers == []
    return completed.stdout, json.loads(out.read_text())


@pytest.mark.timeout(480)
@pytest.mark.usefixtures("broker")  # only to require the tansu binary (fails under CI if missing)
def test_every_scenario_runs_both_servers_and_writes_its_figures(tmp_path):
    stdout, document = run_bench(tmp_path, "all", "siscom,naive", timeout=420)
    scenarios = {entry["scenario"]: entry for entry in document["scenarios"]}
    assert set(scenarios) == {
        "steady",
        "capacity",
        "overload",
        "idle",
        "crowd",
        "many",
        "overdrive",
        "pipeline",
        "viewport",
        "pan",
        "flood",
        "warmup",
        "churn",
        "storm",
    }
    # pan compares map clients that move their box with the same clients holding still.
    columns = {
        "viewport": ["bbox", "device_ids"],
        "pan": ["pan", "still"],
        "warmup": ["warm", "live"],
        "storm": ["siscom"],
    }
    for entry in scenarios.values():
        # viewport compares routing by box with routing by device_ids, in process and end to end.
        # warmup compares a warm start with the same records read live, both by the gateway;
        # storm runs only the gateway (the baselines cannot resume).
        assert entry["targets"] == columns.get(entry["scenario"], ["siscom", "naive"])
        assert entry["rows"], entry["scenario"]
        # The table printed for each scenario shows every figure beside the baseline's, as a ratio.
        assert f"== {entry['scenario']}:" in stdout

    for name in ("siscom", "naive"):
        steady = scenarios["steady"]["figures"][name]
        assert 0 < steady["delivered"] <= steady["expected"]
        assert steady["latency_ms"]["p99"] is not None
        overload = scenarios["overload"]["figures"][name]
        assert 0 < overload["delivered"] <= overload["expected"]
        assert scenarios["idle"]["figures"][name]["connected"] == scenarios["idle"]["params"]["connections"]
        assert scenarios["capacity"]["figures"][name]["steps"]
        for scenario in ("many", "overdrive", "crowd"):
            figures = scenarios[scenario]["figures"][name]
            assert 0 < figures["delivered"] <= figures["expected"], scenario
            # Segments sent per delivery (from ss): the figure that shows frames leaving together.
            assert figures["segments_per_delivery"] is not None, scenario
        assert scenarios["crowd"]["figures"][name]["keepalives_on_time"] is not None
    assert "siscom/naive" in stdout
    warmup = scenarios["warmup"]["figures"]
    assert warmup["warm"]["records_read"] == scenarios["warmup"]["params"]["records"]
    assert warmup["warm"]["window_records"] > 0 and warmup["warm"]["devices_known"] > 0
    storm = scenarios["storm"]["figures"]["siscom"]
    assert storm["exact"] + storm["refused"] + storm["failed"] == scenarios["storm"]["params"]["clients"]
    assert storm["exact"] > 0 and storm["canary_p99_ms"] is not None
    viewport = scenarios["viewport"]["figures"]
    for mode in ("bbox", "device_ids"):
        counts = sorted(int(count) for count in viewport[mode] if count.isdigit())
        assert viewport[mode][str(counts[0])]["deliveries"] == 0 < viewport[mode][str(counts[-1])]["deliveries"]
        assert 0 < viewport[mode]["fields"]["wire_bytes"] < viewport[mode][str(counts[-1])]["wire_bytes"]
        # ... and end to end, over sockets, with devices that move.
        end_to_end = viewport[mode]["end_to_end"]
        assert 0 < end_to_end["delivered"] <= end_to_end["expected"]
        assert end_to_end["latency_ms"]["p99"] is not None


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("broker")
def test_many_runs_the_gateway_over_sse_beside_websocket_in_one_invocation(tmp_path):
    """The SSE issue's benchmark: the same load read over both transports, printed side by side.

    The client processes report which protocol their streams spoke, so a target whose clients
    were not switched to SSE shows here, not only as a suspiciously equal column.
    """
    stdout, many = run_bench(tmp_path, "many", "siscom,siscom-sse", timeout=150)
    assert many["targets"] == ["siscom", "siscom-sse"]
    clients = many["params"]["clients"]
    for name, transport in (("siscom", "websocket"), ("siscom-sse", "sse")):
        figures = many["figures"][name]
        assert figures["client_transports"] == {transport: clients}, name
        assert 0 < figures["delivered"] <= figures["expected"], name
        assert figures["latency_ms"]["p99"] is not None, name
        assert figures["segments_per_delivery"] is not None, name
        assert figures["cpu_percent"] > 0, name
    # The two columns in one table, and the SSE figures as ratios to the WebSocket ones.
    header = next(line for line in stdout.splitlines() if line.startswith("figure "))
    assert header.split()[2:4] == ["siscom", "siscom-sse"]
    assert "note: siscom-sse/siscom (SSE over WebSocket): delivered/s " in stdout


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("broker")
def test_many_with_deflate_runs_the_gateway_without_and_with_compression_and_compares_them(tmp_path):
    """``many --deflate``: the same clients, without and then with a permessage-deflate offer the
    gateway agrees to; CPU and bytes sent per delivery of the two, and the verdicts on them."""
    stdout, many = run_bench(tmp_path, "many", None, 150, "--deflate")
    assert many["targets"] == ["siscom", "siscom-deflate"]
    assert many["params"]["deflate"] is True
    clients = many["params"]["clients"]
    for name, transport in (("siscom", "websocket"), ("siscom-deflate", "websocket+deflate")):
        figures = many["figures"][name]
        assert figures["client_transports"] == {transport: clients}, name
        assert 0 < figures["delivered"] <= figures["expected"], name
        assert figures["bytes_per_delivery"] > 0, name
        assert figures["cpu_percent"] > 0, name
    assert "server bytes sent per delivery" in stdout
    assert "many --deflate: CPU per delivery <= 1.2x uncompressed" in stdout
    assert "many --deflate: bytes sent per delivery <= 0.6x uncompressed" in stdout


@pytest.mark.timeout(120)
def test_the_in_process_fan_out_bench_writes_the_same_bytes_as_the_bare_broadcast():
    """``bench.fanout`` compares CPU only if both fan-outs did the same work: it refuses to print
    figures when their clients received different bytes, so a run that finishes checked that.
    ``--deflate`` adds the gateway's fan-out with compression agreed."""
    sizes = ("--clients", "40", "--devices", "50", "--per-client", "5", "--sizes", "4,20")
    completed = run_module("bench.fanout", *sizes, "--deliveries", "400", "--runs", "2", "--deflate", timeout=100)
    rows = [line.split() for line in completed.stdout.splitlines() if "siscom" in line.split()[2:3]]
    assert [row[0] for row in rows] == ["4", "20"]
    assert "(the same frames, checked)" in completed.stdout
    # With --deflate, the gateway's fan-out with compression agreed, and what it saved.
    assert [line.split()[0] for line in completed.stdout.splitlines() if "siscom's CPU" in line] == ["deflate"] * 2
    assert "... compressed (siscom-deflate): " in completed.stdout
