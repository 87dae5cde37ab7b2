"""What the cursor ids cost, in-process: decoder time per record and frame bytes, with and without.

``python -m bench.cursor_cost`` decodes the same records through the real decoder twice, once
building each frame's cursor and once not, at 3, 12 and 48 position partitions (plus 3 alert
partitions, offsets around 50 million as on a busy topic), and prints per record the decoder's
time (best of several runs) and the frame's size. No broker, no sockets: the id's own cost,
isolated from everything a delivery costs after the decoder. Then what serving a cursor costs:
a resume from a full recent-records window (where it starts, and the records after it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from aiokafka import ConsumerRecord

from siscom.core.cursors import LogPositions
from siscom.core.window import RecentWindow
from siscom.metrics import Metrics
from siscom.pipeline.decoder import Decoder
from supervisors import Mailbox

POSITIONS, ALERTS = "positions", "alerts"
ALERT_PARTITIONS = 3
AROUND = 50_000_000
BATCH = 500


def records(partitions: int, count: int) -> list[ConsumerRecord]:
    """Brief-shaped position records (1 in 40 an alert), round robin over the partitions."""
    out = []
    offsets: dict[tuple[str, int], int] = {}
    for n in range(count):
        alert = n % 40 == 7
        topic = ALERTS if alert else POSITIONS
        partition = n % (ALERT_PARTITIONS if alert else partitions)
        offset = offsets.get((topic, partition), AROUND + partition * 37)
        offsets[(topic, partition)] = offset + 1
        value = json.dumps(
            {
                "data": {
                    "DEVICE_ID": f"08480860{n % 1000:02d}",
                    "LATITUD": "+20.652472",
                    "LONGITUD": "-100.391423",
                    "SPEED": "42",
                    "GPS_DATETIME": "2026-12-01 18:00:00",
                    "SEQ": n,
                }
            }
        ).encode()
        out.append(
            ConsumerRecord(topic, partition, offset, 1_700_000_000_000 + n, 0, None, value, None, -1, len(value), ())
        )
    return out


async def decode_all(batches: list[list[ConsumerRecord]], with_ids: bool) -> tuple[float, list[int]]:
    """Seconds to decode every batch, and each frame's length."""
    out: Mailbox = Mailbox()
    positions = LogPositions([POSITIONS, ALERTS]) if with_ids else None
    decoder = Decoder(
        Mailbox(), out, alerts_topic=ALERTS, max_record_bytes=1 << 20, metrics=Metrics(), positions=positions
    )
    sizes: list[int] = []
    elapsed = 0.0
    for batch in batches:
        started = time.perf_counter()
        await decoder.receive(batch)
        elapsed += time.perf_counter() - started
        for deliveries in out.drain():
            sizes.extend(len(delivery.text) for delivery in deliveries)
    return elapsed, sizes


async def measure(partitions: int, count: int, runs: int) -> dict[str, float]:
    batches = [chunk for chunk in (records(partitions, count)[i : i + BATCH] for i in range(0, count, BATCH))]
    best: dict[bool, float] = {}
    sizes = {}
    for with_ids in (False, True, False, True) * runs:
        elapsed, sizes[with_ids] = await decode_all(batches, with_ids)
        best[with_ids] = min(best.get(with_ids, elapsed), elapsed)
    return {
        "partitions": partitions,
        "us_without": best[False] / count * 1e6,
        "us_with": best[True] / count * 1e6,
        "bytes_without": statistics.mean(sizes[False]),
        "bytes_with": statistics.mean(sizes[True]),
    }


async def window_resume(count: int, back: int, runs: int) -> tuple[float, int]:
    """Milliseconds per resume (best of ``runs``) of a 10-device client whose cursor is ``back``
    records old, from a window holding ``count`` records; and the frames it gets."""
    out: Mailbox = Mailbox()
    decoder = Decoder(
        Mailbox(),
        out,
        alerts_topic=ALERTS,
        max_record_bytes=1 << 20,
        metrics=Metrics(),
        positions=LogPositions([POSITIONS, ALERTS]),
    )
    window = RecentWindow(count, 1 << 40)
    all_records = records(3, count)
    cut = count - back
    for start in range(0, count, BATCH):
        await decoder.receive(all_records[start : start + BATCH])
        for deliveries in out.drain():
            window.extend(deliveries)
    # The cursor just before record ``cut``: per partition, the offset of its first record from there.
    vector = [[None] * 3, [None] * ALERT_PARTITIONS]
    for record in all_records[cut:]:
        topic = 1 if record.topic == ALERTS else 0
        if vector[topic][record.partition] is None:
            vector[topic][record.partition] = record.offset
    cursor = tuple(tuple(AROUND * 2 if o is None else o for o in offsets) for offsets in vector)
    ids = frozenset(f"08480860{n:02d}" for n in range(990, 1000))  # among the last records
    best, got = float("inf"), 0
    for _ in range(runs):
        started = time.perf_counter()
        got = len([d for d in window.after(cursor) if d.device_id in ids])
        best = min(best, time.perf_counter() - started)
    return best * 1000, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    print(f"{options.records} records per run, best of {options.runs * 2} runs; {ALERT_PARTITIONS} alert partitions")
    print("partitions  decoder us/record: without id  with id  (+us, +%)   frame bytes: without  with  (+bytes)")
    for partitions in (3, 12, 48):
        f = asyncio.run(measure(partitions, options.records, options.runs))
        extra = f["us_with"] - f["us_without"]
        print(
            f"{partitions:>10}  {f['us_without']:>27.2f}  {f['us_with']:>7.2f}  "
            f"(+{extra:.2f}, +{extra / f['us_without'] * 100:.0f} %)"
            f"  {f['bytes_without']:>20.0f}  {f['bytes_with']:>4.0f}  (+{f['bytes_with'] - f['bytes_without']:.0f})"
        )
    held, back = 50_000, 600
    ms, frames = asyncio.run(window_resume(held, back, options.runs * 2))
    print(f"a resume {back} records back from a window of {held:,}: {ms:.2f} ms ({frames} frames for 10 devices)")


if __name__ == "__main__":
    main()
