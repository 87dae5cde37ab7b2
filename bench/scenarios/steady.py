"""``steady``: 1,000 devices, 200 clients x 10 devices, 2,000 records/s.

Target: every record delivered, p99 <= 50 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Result, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import load_rows, measure_each
from bench.servers import NAIVE, SISCOM, Target


async def steady(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=6 if smoke else 200,
        per_client=10,
        rate=bench.options.rate or (200.0 if smoke else 2000.0),
        warmup=0.3 if smoke else 2.0,
        duration=1.0 if smoke else 10.0,
        drain=0.5 if smoke else 2.0,
    )
    result = Result("steady", shape.params(), [target.name for target in targets])
    figures = await measure_each(bench, targets, shape, "steady")
    load_rows(result, figures)
    if "siscom" in figures:
        f = figures["siscom"]
        p99 = f.latency_ms["p99"]
        result.verdicts.append(
            Verdict(
                f"steady {shape.rate:,.0f} rec/s: 100% delivered, p99 <= 50 ms",
                f.delivered == f.expected and p99 is not None and p99 <= 50.0,
                f"{f.delivered:,} of {f.expected:,} delivered ({f.delivery_ratio:.2%}), p99 {ms(p99)}",
            )
        )
    return result


SCENARIO = Scenario("steady", steady, targets=(SISCOM, NAIVE), order=10)
