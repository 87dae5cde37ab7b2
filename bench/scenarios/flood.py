"""The ``flood`` scenario: well-behaved clients beside 0, 1 and 3 clients that flood the server.

The well-behaved clients (the canaries) are the steady scenario's kind, a smaller crowd: 50
clients of 10 devices each at 1,000 records/s. The flooders (:mod:`bench.flooder`, a process
of their own) send WebSocket pings and subscribe messages of 1,000 ids as fast as the server
takes them, never read, and reconnect whenever they are dropped. Each server runs the same load
three times over one set of canaries, with 0, then 1, then 3 flooders. Figures: the canaries'
p50 and p99 latency, the share delivered, the server's CPU, and how often the flooders had to
reconnect. Target: the gateway's canary p99 stays at or under 250 ms with 3 flooders.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import LoadRun
from bench.servers import HOST, NAIVE, REPO_ROOT, SISCOM, Target
from siscom.dev.processes import terminate

#: How many flooders each window runs beside the canaries.
FLOODERS = (0, 1, 3)
TARGET_P99_MS = 250.0


class FloodProcess:
    """``count`` flooders against one server, in their own process; their tally when stopped."""

    def __init__(self, port: int, count: int) -> None:
        self._command = [
            sys.executable,
            "-m",
            "bench.flooder",
            f"ws://{HOST}:{port}/api/v1/stream",
            "--clients",
            str(count),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.count = count
        self.tally: dict[str, int] = {"connections": 0, "bytes": 0}

    def __enter__(self) -> FloodProcess:
        if self.count:
            self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        terminate(process, timeout=10)
        assert process.stdout is not None
        with process.stdout:
            lines = process.stdout.read().strip().splitlines()
        if lines:
            self.tally = json.loads(lines[-1])


async def flood(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = Shape(
        devices=50 if smoke else 500,
        clients=4 if smoke else 50,
        per_client=10,
        rate=bench.options.rate or (100.0 if smoke else 1000.0),
        warmup=0.3 if smoke else 2.0,
        duration=1.0 if smoke else 8.0,
        drain=0.5 if smoke else 2.0,
        client_processes=1,
    )
    result = Result("flood", {**shape.params(), "flooders": list(FLOODERS)}, [t.name for t in targets])
    figures: dict[int, dict[str, Any]] = {count: {} for count in FLOODERS}
    tallies: dict[int, dict[str, dict[str, int]]] = {count: {} for count in FLOODERS}
    for target in targets:
        async with LoadRun(bench, target, shape, "flood") as run:
            for count in FLOODERS:
                assert run.server is not None  # started on entering the run
                with FloodProcess(run.server.port, count) as flood:
                    figures[count][target.name] = await run.measure(shape.rate)
                tallies[count][target.name] = flood.tally
                await asyncio.sleep(1.0)  # the last flooders' connections end before the next window
    for count in FLOODERS:
        by_target = figures[count]
        result.rows.append(
            Row(f"{count} flooders: canary p50", {n: f.latency_ms["p50"] for n, f in by_target.items()}, "ms")
        )
        result.rows.append(
            Row(f"{count} flooders: canary p99", {n: f.latency_ms["p99"] for n, f in by_target.items()}, "ms")
        )
        result.rows.append(
            Row(f"{count} flooders: delivered", {n: f.delivery_ratio for n, f in by_target.items()}, "", 4)
        )
        result.rows.append(Row(f"{count} flooders: server CPU", {n: f.cpu_percent for n, f in by_target.items()}, "%"))
        if count:
            result.rows.append(
                Row(
                    f"{count} flooders: their connections",
                    {n: t["connections"] for n, t in tallies[count].items()},
                    "",
                    0,
                    show_ratio=False,
                )
            )
    result.figures = {
        name: {str(count): {**asdict(figures[count][name]), "flood": tallies[count][name]} for count in FLOODERS}
        for name in result.targets
    }
    if "siscom" in figures[3]:
        p99 = figures[3]["siscom"].latency_ms["p99"]
        result.verdicts.append(
            Verdict(
                f"canary p99 <= {TARGET_P99_MS:.0f} ms beside 3 flooders",
                p99 is not None and p99 <= TARGET_P99_MS,
                f"p99 {ms(p99)} (0 flooders: {ms(figures[0]['siscom'].latency_ms['p99'])})",
            )
        )
    return result


SCENARIO = Scenario("flood", flood, targets=(SISCOM, NAIVE), order=70)
