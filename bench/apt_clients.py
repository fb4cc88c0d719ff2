"""What apt clients behind an edge cost the tracker: tracker calls per client request.

A figure to track, not a test. It builds a signed repository (aptmesh.debrepo:
`--swarmed` packages over the swarm threshold, `--small` under it), runs a real
`aptmesh up` on it (tracker, seeder, edge), and plays `--clients` apt clients
against the edge: each asks for the edge list (`/_aptmesh/edges`, what the
apt method asks first), `InRelease`, `Packages`, and `--per-client` package
files drawn from a Zipf-like popularity (a few packages are wanted by most
clients, as in a fleet's upgrades). Every request goes over HTTP to the edge,
`--concurrency` at a time. It reads the tracker's own counters before and
after (gRPC calls handled, by method, and announces) and prints the tracker's
load per client request, split into the first pass over the packages (a cold
cache: lookups and swarm downloads) and the rest (a warm cache).

    .venv/bin/python bench/apt_clients.py [--clients 10000] [--per-client 4]
        [--swarmed 8] [--small 32] [--concurrency 32]

bench/tracker_scale.py prints the announce load of the edges themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from aptmesh.debrepo import DebRepo, PackageSpec, SigningKey, build_repo

APTMESH = str(Path(sys.executable).with_name("aptmesh"))
SWARM_MIN = 256 * 1024
MESH_HOST = "127.0.0.2"


def tracker_counters(url: str) -> Counter[str]:
    """gRPC calls handled by method, and announces, from the tracker's /metrics."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "grpc_server_handled_total":
                method = sample.labels.get("grpc_method", "?")
                if sample.labels.get("grpc_service", "").startswith("grpc.health"):
                    continue
                counts[method] += int(sample.value)
            elif sample.name == "aptmesh_tracker_announces_total":
                event = sample.labels.get("event", "") or "none"
                counts[f"announce {event}"] += int(sample.value)
    return counts


def start_mesh(repo: DebRepo, data: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    argv = [
        *(APTMESH, "up", "--data-dir", str(data), "--upstream", repo.base_url),
        *("--keyring", str(repo.keyring), "--host", MESH_HOST),
        *("--swarm-min-size", str(SWARM_MIN), "--log-level", "warning"),
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    end = time.monotonic() + 120
    while time.monotonic() < end:
        path = data / "endpoints.json"
        if path.exists():
            endpoints: dict[str, object] = json.loads(path.read_text())
            if endpoints.get("pid") == process.pid:
                return process, endpoints
        if process.poll() is not None:
            raise SystemExit("aptmesh up exited before it started")
        time.sleep(0.2)
    raise SystemExit("aptmesh up did not write endpoints.json within 120 s")


def wait_published(seeder_metrics: str, count: int) -> None:
    end = time.monotonic() + 300
    while time.monotonic() < end:
        with urllib.request.urlopen(seeder_metrics, timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        done = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "aptmesh_seeder_published_total"
        )
        if done >= count:
            return
        time.sleep(0.5)
    raise SystemExit(f"the seeder did not publish {count} torrents within 300 s")


def popularity(
    paths: Sequence[str], clients: int, per_client: int, seed: int = 1
) -> list[list[str]]:
    """Each client's package paths: rank r is wanted with weight 1/(r+1)."""
    rng = random.Random(seed)  # noqa: S311 - a load pattern, not secrecy
    weights = [1 / (rank + 1) for rank in range(len(paths))]
    return [list(dict.fromkeys(rng.choices(paths, weights, k=per_client))) for _ in range(clients)]


async def play(
    edge: str, prefix: str, indexes: Sequence[str], wanted: list[list[str]], concurrency: int
) -> tuple[int, int]:
    """Runs every client's requests; (requests made, failures)."""
    made = failed = 0
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for paths in wanted:
        queue.put_nowait(["/_aptmesh/edges", *(prefix + p for p in (*indexes, *paths))])

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal made, failed
        while not queue.empty():
            for path in queue.get_nowait():
                async with http.get(edge + path) as response:
                    await response.read()
                    made += 1
                    failed += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return made, failed


def report(label: str, counts: Counter[str], requests: int) -> None:
    total = sum(counts.values())
    by_method = ", ".join(f"{m} {n}" for m, n in counts.most_common() if n)
    print(
        f"{label:34} {requests:7,} client requests, {total:6,} tracker calls"
        f" = {total / max(requests, 1):.4f} per request ({by_method or 'none'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--swarmed", type=int, default=8)
    parser.add_argument("--small", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = SigningKey.generate(work / "key")
        specs = [PackageSpec(f"big{n:03d}", "1.0-1", SWARM_MIN + 4096) for n in range(args.swarmed)]
        specs += [PackageSpec(f"small{n:03d}", "1.0-1", 8 * 1024) for n in range(args.small)]
        repo = build_repo(work / "www" / "debian", key, specs)
        repo.server.start()
        process = None
        try:
            process, endpoints = start_mesh(repo, work / "mesh")
            metrics = endpoints["metrics"]
            assert isinstance(metrics, dict)
            wait_published(str(metrics["seeder"]), args.swarmed)
            edge, tracker = str(endpoints["edge_http"]), str(metrics["tracker"])
            prefix = f"/{repo.host}/debian/"
            paths = [p.filename for p in repo.packages]
            random.Random(2).shuffle(paths)  # popularity unrelated to size
            indexes = (repo.INRELEASE, repo.PACKAGES)
            wanted = popularity(paths, args.clients, args.per_client)
            # pass 1: one client per package, so every file is fetched once (cold cache)
            cold = [[p] for p in paths]
            start = tracker_counters(tracker)
            made_cold, failed = asyncio.run(play(edge, prefix, indexes, cold, args.concurrency))
            mid = tracker_counters(tracker)
            began = time.monotonic()
            made_warm, failed_warm = asyncio.run(
                play(edge, prefix, indexes, wanted, args.concurrency)
            )
            took = time.monotonic() - began
            end = tracker_counters(tracker)
        finally:
            if process is not None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
            repo.close()
    print(
        f"repository: {args.swarmed} packages over the swarm threshold, {args.small} under;"
        f" {args.clients:,} clients x (edge list + InRelease + Packages + up to"
        f" {args.per_client} packages), {args.concurrency} at a time"
    )
    report("cold cache (each file once)", mid - start, made_cold)
    report(f"{args.clients:,} clients, warm cache", end - mid, made_warm)
    print(
        f"warm pass: {made_warm / took:,.0f} client requests/s through one edge;"
        f" failures {failed + failed_warm}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
