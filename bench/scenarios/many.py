"""``many``: many dashboards, few vehicles each: 1,000 clients x 10 of 1,000 devices, 2,400
records/s (24,000 deliveries/s, about a quarter of a frame per client per Kafka batch).

Target: sustained (delivery ratio >= 0.999, p99 <= 100 ms). Run beside the gateway with its
clients reading over Server-Sent Events (``siscom-sse``: the same load, the same server, the other
transport), the gateway with write coalescing off, the naive baseline and the bare ``websockets``
broadcast server.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Result, Verdict
from bench.scenarios.harness import Bench, Scenario, Shape, ms
from bench.scenarios.load import LoadFigures, load_rows, measure_each
from bench.servers import NAIVE, SISCOM, SISCOM_PLAIN, SISCOM_SSE, WEBSOCKETS, Target

MAX_P99_MS = 100.0
#: ``many --deflate``: compression may cost at most this much CPU per delivery over the same
#: clients without it, and should leave at most this share of the bytes sent per delivery.
MAX_DEFLATE_CPU_RATIO = 1.2
MAX_DEFLATE_BYTES_RATIO = 0.6


def many_shape(smoke: bool, rate: float) -> Shape:
    """1,000 clients x 10 of 1,000 devices, as ``many`` and ``overdrive`` load them."""
    return Shape(
        devices=50 if smoke else 1000,
        clients=20 if smoke else 1000,
        per_client=5 if smoke else 10,
        rate=rate,
        warmup=0.3 if smoke else 3.0,
        duration=1.0 if smoke else 15.0,
        drain=0.5 if smoke else 3.0,
        client_processes=2,
        connect_concurrency=32,
    )


async def many(bench: Bench, targets: Sequence[Target]) -> Result:
    smoke = bench.options.smoke
    shape = many_shape(smoke, bench.options.rate or (100.0 if smoke else 2400.0))
    result = Result("many", shape.params(), [target.name for target in targets])
    figures = await measure_each(bench, targets, shape, "many")
    load_rows(result, figures)
    if "siscom" in figures:
        f = figures["siscom"]
        result.verdicts.append(
            Verdict(
                f"many: {f.offered_deliveries_s:,.0f} deliveries/s sustained "
                f"(ratio >= 0.999, p99 <= {MAX_P99_MS:.0f} ms)",
                f.sustained(MAX_P99_MS),
                f"ratio {f.delivery_ratio:.4f}, p99 {ms(f.latency_ms['p99'])}",
            )
        )
    if "siscom" in figures and "siscom-sse" in figures:
        result.notes.append(transport_note(figures["siscom"], figures["siscom-sse"]))
    if "siscom" in figures and "siscom-deflate" in figures:
        result.verdicts.extend(compression_verdicts(figures["siscom"], figures["siscom-deflate"]))
    return result


def compression_verdicts(plain: LoadFigures, deflate: LoadFigures) -> list[Verdict]:
    """The compressed run against the uncompressed one: CPU and bytes sent per delivery."""
    verdicts = []
    for label, top, bottom, limit in (
        ("CPU per delivery", deflate.cpu_us_per_delivery, plain.cpu_us_per_delivery, MAX_DEFLATE_CPU_RATIO),
        ("bytes sent per delivery", deflate.bytes_per_delivery, plain.bytes_per_delivery, MAX_DEFLATE_BYTES_RATIO),
    ):
        ratio = top / bottom if top is not None and bottom else None
        verdicts.append(
            Verdict(
                f"many --deflate: {label} <= {limit}x uncompressed (siscom-deflate/siscom)",
                ratio is not None and ratio <= limit,
                "-" if ratio is None else f"{top:.1f} against {bottom:.1f}: {ratio:.2f}x",
            )
        )
    return verdicts


def transport_note(websocket: LoadFigures, sse: LoadFigures) -> str:
    """The SSE run's figures as ratios to the WebSocket run's (SSE over WebSocket)."""

    def ratio(top: float | None, bottom: float | None) -> str:
        return f"{top / bottom:.2f}x" if top is not None and bottom else "-"

    return (
        f"siscom-sse/siscom (SSE over WebSocket): delivered/s {ratio(sse.delivered_s, websocket.delivered_s)}, "
        f"p99 {ratio(sse.latency_ms['p99'], websocket.latency_ms['p99'])}, "
        f"CPU per delivery {ratio(sse.cpu_us_per_delivery, websocket.cpu_us_per_delivery)}, "
        f"segments per delivery {ratio(sse.segments_per_delivery, websocket.segments_per_delivery)}"
    )


SCENARIO = Scenario("many", many, targets=(SISCOM, SISCOM_SSE, SISCOM_PLAIN, NAIVE, WEBSOCKETS), order=50)
