"""``capacity``: 200 clients x 50 of 1,000 devices (10 deliveries per record), the rate raised in
steps of 25 % until a step fails (delivery ratio < 0.999 or p99 > 100 ms, twice).

Target: the gateway's highest sustained load is at least twice the baseline's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import LoadFigures, LoadRun
from bench.servers import NAIVE, SISCOM, SISCOM_2_WORKERS, Target

CAPACITY_STEP = 1.25
CAPACITY_MAX_P99_MS = 100.0


async def find_capacity(
    bench: Bench, target: Target, shape: Shape, limit: float
) -> tuple[LoadFigures | None, list[dict[str, Any]]]:
    """Raise the rate by 25 % a step until a step fails twice; then try once between the last two.

    Every attempt starts afresh (topic, server, clients), so no step inherits a backlog, a
    longer broker log or a warmer heap from the one before.
    """
    steps: list[dict[str, Any]] = []
    best: LoadFigures | None = None

    async def attempt(rate: float) -> LoadFigures | None:
        for trial in range(2):
            async with LoadRun(bench, target, shape, "capacity") as run:
                figures = await run.measure(rate)
            ok = figures.sustained(CAPACITY_MAX_P99_MS)
            steps.append({"rate": rate, "trial": trial, "sustained": ok, **_step_summary(figures)})
            print(
                f"   {target.name}: {rate:,.0f} rec/s -> {_step_line(figures)} {'ok' if ok else 'FAILED'}", flush=True
            )
            if ok:
                return figures
        return None

    rate = shape.rate
    failed_at = None
    while rate <= limit:
        figures = await attempt(rate)
        if figures is None:
            failed_at = rate
            break
        best = figures
        rate *= CAPACITY_STEP
    if best is not None and failed_at is not None:
        figures = await attempt(math.sqrt(best.rate * failed_at))
        if figures is not None:
            best = figures
    return best, steps


def _step_summary(f: LoadFigures) -> dict[str, Any]:
    return {
        "delivered_s": f.delivered_s,
        "delivery_ratio": f.delivery_ratio,
        "p99_ms": f.latency_ms["p99"],
        "cpu_percent": f.cpu_percent,
    }


def _step_line(f: LoadFigures) -> str:
    others = ", ".join(f"{name} {value:.0f}%" for name, value in f.other_cpu_percent.items())
    return (
        f"{f.delivered_s:,.0f} deliveries/s, ratio {f.delivery_ratio:.4f}, p99 {ms(f.latency_ms['p99'])}, "
        f"server CPU {f.cpu_percent:.0f}% ({others})"
    )


async def capacity(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=6 if smoke else 200,
        per_client=10 if smoke else 50,
        rate=100.0 if smoke else 400.0,
        warmup=0.3 if smoke else 1.0,
        duration=1.0 if smoke else 5.0,
        drain=0.5 if smoke else 1.5,
    )
    limit = shape.rate if smoke else 20_000.0  # a smoke run tries one step
    result = Result(
        "capacity", {**shape.params(), "start": shape.rate, "step": CAPACITY_STEP}, [t.name for t in targets]
    )
    best: dict[str, LoadFigures | None] = {}
    for target in targets:
        best[target.name], steps = await find_capacity(bench, target, shape, limit)
        found = best[target.name]
        result.figures[target.name] = {"best": asdict(found) if found is not None else None, "steps": steps}

    def pick(getter: Callable[[LoadFigures], Any]) -> dict[str, Any]:
        return {name: (getter(f) if f is not None else None) for name, f in best.items()}

    result.rows += [
        Row("capacity (records)", pick(lambda f: f.offered_records_s), "rec/s", 0),
        Row("capacity (deliveries)", pick(lambda f: f.delivered_s), "/s", 0),
        Row("delivery ratio there", pick(lambda f: f.delivery_ratio), "", 4),
        Row("latency p50 there", pick(lambda f: f.latency_ms["p50"]), "ms"),
        Row("latency p99 there", pick(lambda f: f.latency_ms["p99"]), "ms"),
        Row("server CPU there", pick(lambda f: f.cpu_percent), "%"),
        Row("server CPU per delivery", pick(lambda f: f.cpu_us_per_delivery), "us"),
        Row("server RSS there", pick(lambda f: f.rss_max_mb), "MB"),
    ]
    ours, naive = best.get("siscom"), best.get("naive")
    if ours is not None and naive is not None:
        ratio = ours.delivered_s / naive.delivered_s
        result.verdicts.append(
            Verdict(
                "capacity, one process, >= 2x the naive baseline",
                ratio >= 2.0,
                f"{ours.delivered_s:,.0f} vs {naive.delivered_s:,.0f} deliveries/s: {ratio:.2f}x",
            )
        )
    result.notes.append(
        f"sustained = delivery ratio >= 0.999 and p99 <= {CAPACITY_MAX_P99_MS:.0f} ms; "
        "a step counts as failed after two tries"
    )
    return result


# Two workers too: the capacity issue asks for that figure.
SCENARIO = Scenario("capacity", capacity, targets=(SISCOM, NAIVE, SISCOM_2_WORKERS), order=20)
