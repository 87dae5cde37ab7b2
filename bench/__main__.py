"""``python -m bench SCENARIO... [--json FILE]``: run scenarios and print their tables.

The harness starts a private Kafka-compatible broker on a loopback port, runs each server under
test in turn (the gateway and the naive baseline, by default), and stops everything it started
before it returns, also when a run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Result, render
from bench.scenarios import DEFAULT_TARGETS, DEFLATE_TARGETS, SCENARIOS, TARGETS, Bench, Options
from siscom.dev.broker import TansuBroker


def raise_open_files_limit() -> int:
    """Lift this process's soft limit on open files to the hard limit; children inherit it.

    The idle scenario holds 10,000 connections: more descriptors than the usual default of
    1,024, in the server and in the client processes. The service itself never changes it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="+",
        choices=[*SCENARIOS, "all"],
        metavar="SCENARIO",
        help=f"one or more of {', '.join(SCENARIOS)}, or 'all' for every one in turn",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--targets", help=f"comma-separated servers to run, of {', '.join(TARGETS)} (default: per scenario)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="records per second for steady, overload and viewport's end-to-end part, instead of the default",
    )
    parser.add_argument(
        "--clients",
        type=int,
        help="WebSocket clients of viewport's end-to-end part and of crowd, the map clients of pan and the resuming "
        "clients of storm, instead of the default",
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="compare compression: the gateway with clients that do not and that do offer permessage-deflate "
        "(targets siscom,siscom-deflate, unless --targets names others)",
    )
    parser.add_argument(
        "--seconds", type=float, help="length of every load scenario's measured window, instead of its default"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        help="processes every load scenario spreads its clients over, instead of its default (2 for many)",
    )
    parser.add_argument("--records", type=int, help="records in storm's log, instead of 300,000")
    parser.add_argument(
        "--server-root",
        type=Path,
        help="storm also runs the gateway of this tree of the project (e.g. an export of main), as a column 'main'",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway storm starts (repeatable), e.g. --set STREAM_REPLAY_CONCURRENCY=1",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny, seconds-long run that checks the harness works")
    parser.add_argument("--workdir", type=Path, help="where server and broker logs go (default: a temporary directory)")
    return parser


async def run(names: list[str], args: argparse.Namespace, workdir: Path) -> list[Result]:
    options = Options(
        workdir=workdir,
        smoke=args.smoke,
        rate=args.rate,
        clients=args.clients,
        deflate=args.deflate,
        seconds=args.seconds,
        client_processes=args.client_processes,
        records=args.records,
        server_env=dict(item.split("=", 1) for item in args.set),
        server_root=args.server_root.resolve() if args.server_root else None,
    )
    results = []
    with TansuBroker(log_path=workdir / "tansu.log") as broker:
        bench = Bench(broker, options)
        for name in names:
            if args.targets:
                targets = [TARGETS[t] for t in args.targets.split(",")]
            else:
                targets = list(DEFLATE_TARGETS if args.deflate else DEFAULT_TARGETS[name])
            started = time.monotonic()
            print(f"-- {name}: {', '.join(t.name for t in targets)}", flush=True)
            result = await SCENARIOS[name].run(bench, targets)
            result.params["took_s"] = round(time.monotonic() - started, 1)
            if args.deflate:
                result.params["deflate"] = True
            if args.seconds and "window_s" in result.params:
                result.params["window_s"] = args.seconds
            print(render(result), "\n", flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.targets and any(t not in TARGETS for t in args.targets.split(",")):
        print(f"unknown target in {args.targets!r}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    raise_open_files_limit()
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    with tempfile.TemporaryDirectory(prefix="siscom-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results = asyncio.run(run(names, args, workdir))
        except KeyboardInterrupt:
            return 130
    if args.json:
        document = results[0].to_json() if len(results) == 1 else {"scenarios": [r.to_json() for r in results]}
        args.json.write_text(json.dumps(document, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
