"""``overload``: 100 clients each subscribed to every device, offered three times the gateway's
capacity.

Target: every client's p99 data age <= 1 s and RSS flat.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Result, Row, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import backlog_rows, load_rows, measure_each
from bench.servers import NAIVE, SISCOM, Target

#: Deliveries per second one gateway process sustained in the capacity scenario on the reference
#: machine (2 cores, shared with broker, producer and clients); overload offers three times this.
#: ``--rate`` overrides it for another machine.
REFERENCE_CAPACITY = 52_000


async def overload(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    clients = 6 if smoke else 100
    rate = bench.options.rate or (50.0 if smoke else 3 * REFERENCE_CAPACITY / clients)
    shape = Shape(
        devices=50 if smoke else 1000,
        clients=clients,
        per_client=None,
        rate=rate,
        warmup=0.3 if smoke else 2.0,
        duration=1.0 if smoke else 20.0,
        drain=0.5 if smoke else 3.0,
    )
    segment = 0.5 if smoke else 5.0
    result = Result("overload", shape.params(), [target.name for target in targets])
    figures = await measure_each(bench, targets, shape, "overload", age_segment=segment)
    load_rows(result, figures)
    result.rows += [
        Row(f"data age p99, first {segment:g} s", {n: f.age_first_p99_ms for n, f in figures.items()}, "ms"),
        *backlog_rows(figures, segment),
    ]
    if "siscom" in figures:
        f = figures["siscom"]
        worst = f.worst_client_p99_ms
        result.verdicts += [
            Verdict(
                "overload: every client's p99 data age <= 1 s",
                worst is not None and worst <= 1000.0,
                f"worst client p99 {ms(worst)} at {f.offered_deliveries_s:,.0f} deliveries/s offered, "
                f"{f.delivered_s:,.0f}/s delivered",
            ),
            Verdict(
                "overload: RSS flat",
                f.rss_flat,
                f"{f.rss_start_mb:.1f} MB at the start, {f.rss_mid_mb:.1f} MB halfway, {f.rss_end_mb:.1f} MB at the "
                f"end of {shape.duration:g} s (flat: the second half grows by at most 5 MB or 5%)",
            ),
        ]
    result.notes.append("data age = arrival at the client minus the producer's timestamp, of the frames that arrived")
    return result


SCENARIO = Scenario("overload", overload, targets=(SISCOM, NAIVE), order=30)
