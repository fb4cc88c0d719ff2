"""`aptmesh status`: the whole mesh in one screen, read from the tracker's MeshStatusService.

Zones with their edges, the seed boxes, each with its health, uplink and last
renewal; the index size; the swarms by torrent. `--json` prints one document
for scripts (the same figures, times as RFC 3339 UTC); `--watch` redraws the
screen every `--interval` seconds until interrupted.

Repository generations: per suite, each generation the live edges serve (the
InRelease Date and a short hash), how many serve it and when one first
verified it; a suite not every edge has caught up on shows how long its
newest generation has waited (aptmesh_tracker.convergence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aptmesh_tracker.client import TrackerClient, TrackerClientError
from aptmesh_tracker.convergence import SuiteConvergence
from aptmesh_tracker.status import MeshStatus, Registration

ENV_TRACKER = "APTMESH_STATUS_TRACKER"
NO_GENERATIONS = "none served yet (no edge has verified an InRelease)"
CLEAR = "\x1b[H\x1b[2J"


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rate(bytes_per_second: int) -> str:
    if bytes_per_second <= 0:
        return "unknown"
    if bytes_per_second < 1024:
        return f"{bytes_per_second} B/s"
    value, unit = bytes_per_second / 1024, "KiB/s"
    for bigger in ("MiB/s", "GiB/s"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _registration_json(reg: Registration) -> dict[str, Any]:
    return {
        "id": reg.edge.id,
        "url": reg.edge.url,
        "zone": reg.edge.zone,
        "health": reg.health.value,
        "upload_capacity": reg.edge.upload_capacity,
        "last_renewal": _time(reg.last_renewal),
        "lease_end": _time(reg.lease_end),
    }


def to_json(status: MeshStatus) -> dict[str, Any]:
    zones: dict[str, list[str]] = {}
    for reg in status.edges:
        zones.setdefault(reg.edge.zone, []).append(reg.edge.id)
    return {
        "time": _time(status.time),
        "tracker_version": status.tracker_version,
        "lease_seconds": status.lease_seconds,
        "zones": [{"zone": z, "edges": ids} for z, ids in sorted(zones.items())],
        "edges": [_registration_json(r) for r in status.edges],
        "seed_boxes": [_registration_json(r) for r in status.seed_boxes],
        "index_records": status.index_records,
        "torrents_with_peers": status.torrents_with_peers,
        "seeders": status.seeders,
        "leechers": status.leechers,
        "swarms": [
            {
                "sha256": s.torrent.sha256,
                "name": s.name,
                "info_hashes": [h.hex() for h in s.torrent.info_hashes],
                "seeders": s.torrent.seeders,
                "leechers": s.torrent.leechers,
            }
            for s in status.swarms
        ],
        "generations": [_suite_json(s, status.time) for s in status.suites],
    }


def _suite_json(suite: SuiteConvergence, now: float) -> dict[str, Any]:
    return {
        "suite": suite.suite,
        "edges": suite.edges,
        "lag_seconds": round(suite.lag_seconds(now)),
        "generations": [
            {
                "date": _time(g.date) if g.date else None,
                "hash": g.hash,
                "first_seen": _time(g.first_seen),
                "edges": g.edges,
            }
            for g in suite.generations
        ],
    }


def _suite_lines(suite: SuiteConvergence, now: float) -> list[str]:
    lag = suite.lag_seconds(now)
    behind = f", newest waiting {round(lag)} s" if lag else ""
    lines = [f"  {suite.suite}: {suite.edges} edges{behind}"]
    for g in suite.generations:
        date = _time(g.date) if g.date else "(no Date)"
        served = f"{g.edges}/{suite.edges} edges"
        lines.append(f"    {date} {g.hash}  {served}  first seen {_ago(now, g.first_seen)}")
    return lines


def _ago(now: float, then: float) -> str:
    return f"{max(0, round(now - then))} s ago"


def _registration_line(reg: Registration, now: float) -> str:
    url = reg.edge.url or "-"
    return (
        f"    {reg.edge.id:<24} {reg.health.value:<8} uplink {_rate(reg.edge.upload_capacity):<12}"
        f" renewed {_ago(now, reg.last_renewal):<10} {url}"
    )


def render(status: MeshStatus, target: str) -> str:
    now = status.time
    zones: dict[str, list[Registration]] = {}
    for reg in status.edges:
        zones.setdefault(reg.edge.zone, []).append(reg)
    lines = [
        f"aptmesh mesh at {target} (tracker {status.tracker_version}) {_time(now)}",
        "",
        f"zones: {len(zones)}   edges: {len(status.edges)}   seed boxes: {len(status.seed_boxes)}"
        f"   (lease {status.lease_seconds} s)",
    ]
    for zone, regs in sorted(zones.items()):
        lines.append(f"  zone {zone or '(none)'}:")
        lines += [_registration_line(r, now) for r in regs]
    if not zones:
        lines.append("  no edge is registered")
    lines.append("  seed boxes:")
    lines += [_registration_line(r, now) for r in status.seed_boxes] or ["    none registered"]
    lines += [
        "",
        f"index: {status.index_records} package records",
        f"swarms: {status.torrents_with_peers} torrents with peers,"
        f" {status.seeders} seeders, {status.leechers} leechers (per torrent)",
    ]
    for swarm in status.swarms:
        name = swarm.name or f"(not in the index) {swarm.torrent.info_hashes[0].hex()}"
        lines.append(
            f"  {swarm.torrent.seeders:>5} seeders {swarm.torrent.leechers:>5} leechers  {name}"
        )
    if len(status.swarms) < status.torrents_with_peers:
        lines.append(f"  ... and {status.torrents_with_peers - len(status.swarms)} more")
    lines += [
        "",
        "repository generations:" if status.suites else f"repository generations: {NO_GENERATIONS}",
    ]
    for suite in status.suites:
        lines += _suite_lines(suite, now)
    return "\n".join(lines) + "\n"


async def fetch(target: str, max_swarms: int, deadline: float) -> MeshStatus:
    async with TrackerClient(target, timeout=deadline) as client:
        return await client.mesh_status(max_swarms)


async def _run(args: argparse.Namespace) -> int:
    while True:
        try:
            status = await fetch(args.tracker, args.swarms, args.timeout)
        except TrackerClientError as exc:
            if not args.watch:
                print(f"aptmesh status: {exc}", file=sys.stderr)
                return 1
            text = f"aptmesh status: {exc} (retrying every {args.interval:g} s)\n"
        else:
            if args.json:
                print(json.dumps(to_json(status), indent=2), flush=True)
                if not args.watch:
                    return 0
                await asyncio.sleep(args.interval)
                continue
            text = render(status, args.tracker)
        if not args.watch:
            sys.stdout.write(text)
            return 0
        sys.stdout.write(CLEAR + text)
        sys.stdout.flush()
        await asyncio.sleep(args.interval)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000: {text!r}")
    return value


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aptmesh status", description="the whole mesh in one screen, from the tracker"
    )
    parser.add_argument(
        "--tracker",
        default=os.environ.get(ENV_TRACKER, "localhost:50051"),
        help=f"host:port of the tracker's gRPC server [{ENV_TRACKER}] (default: localhost:50051)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    parser.add_argument("--watch", action="store_true", help="redraw until interrupted")
    parser.add_argument(
        "--interval", type=_positive, default=2.0, help="seconds between redraws (default: 2)"
    )
    parser.add_argument(
        "--swarms", type=_count, default=20, help="torrents listed, most peers first (default: 20)"
    )
    parser.add_argument(
        "--timeout", type=_positive, default=5.0, help="deadline of the call in seconds"
    )
    args = parser.parse_args(list(argv))
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
