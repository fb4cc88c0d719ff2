"""`python -m bench.swarm`: the swarm benchmark (make bench-swarm), or `--cleanup`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench.swarm import netns, report
from bench.swarm.harness import SYSTEMS, BenchConfig, BenchError, BenchRun, scenarios


def _settings(text: str) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.swarm",
        description="Distribute a file (or a Debian-like pulse) to N edges in network "
        "namespaces with each system, and compare the last finish with the Kumar-Ross bound.",
    )
    parser.add_argument("--edges", type=int, default=6, help="receiving hosts (default 6)")
    parser.add_argument("--size-mib", type=float, default=64, help="payload size (default 64)")
    parser.add_argument("--pulse", action="store_true", help="many files, Debian's size mix")
    parser.add_argument("--seed", type=int, default=1, help="payload seed (default 1)")
    parser.add_argument("--rate", type=float, default=80, help="seed-bound Mbit/s (default 80)")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(scenarios(1)), help="repeatable"
    )
    parser.add_argument("--system", action="append", choices=SYSTEMS, help="repeatable")
    parser.add_argument("--calib-seconds", type=float, default=1.5)
    parser.add_argument("--lt-settings", type=_settings, default={}, help="JSON, every session")
    parser.add_argument("--seed-settings", type=_settings, default={}, help="JSON, the seed")
    parser.add_argument("--super-seed", action="store_true")
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument(
        "--no-edge-uplinks",
        action="store_true",
        help="aptmesh edges do not report their uplink (the seeder adapts on its own)",
    )
    parser.add_argument(
        "--client-concurrency",
        type=int,
        default=4,
        help="HTTP requests each receiving host keeps in flight (default 4)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep-logs", default="", help="copy worker logs to this directory")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    parser.add_argument(
        "--perf-dir",
        default="",
        help="perf record the receiving processes on the edge hosts into this directory",
    )
    parser.add_argument(
        "--cleanup",
        nargs="?",
        const="",
        metavar="PREFIX",
        help="remove leftovers of PREFIX (e.g. amb1234-), or of every run whose process is gone",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        sys.stderr.write("bench.swarm: needs root (network namespaces and tc)\n")
        return 2
    if args.cleanup is not None:
        for name in netns.cleanup(args.cleanup or None):
            print(f"removed {name}")
        return 0
    config = BenchConfig(
        edges=args.edges,
        file_size=int(args.size_mib * 2**20),
        pulse=args.pulse,
        seed=args.seed,
        rate=args.rate,
        scenarios=tuple(args.scenario or ("seed-bound", "peer-bound")),
        systems=tuple(args.system or ("http", "libtorrent-default")),
        calib_seconds=args.calib_seconds,
        lt_settings=args.lt_settings,
        seed_settings=args.seed_settings,
        super_seed=args.super_seed,
        sequential=args.sequential,
        edge_uplinks=not args.no_edge_uplinks,
        client_concurrency=args.client_concurrency,
        keep_logs=args.keep_logs,
        perf_dir=args.perf_dir,
    )
    results: list[dict[str, Any]] = []

    def emit(result: dict[str, Any]) -> None:
        line = json.dumps(result, sort_keys=True)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as out:
                out.write(line + "\n")
        sys.stderr.write(report.row(result) + "\n")
        results.append(result)

    try:
        with BenchRun(config) as run:
            sys.stderr.write(f"bench.swarm: run {run.prefix} in {run.tmp}\n{report.HEADER}\n")
            for _ in range(args.repeat):
                run.run(emit)
    except BenchError as exc:
        sys.stderr.write(f"bench.swarm: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("bench.swarm: interrupted; everything of this run was removed\n")
        return 130
    sys.stderr.write("\n" + report.table(results) + "\n")
    return 0 if results and all(r["valid"] for r in results) else 3


if __name__ == "__main__":
    sys.exit(main())
