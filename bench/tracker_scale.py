"""Tracker scale: N edges x T torrents announcing at the interval, against 1 and 2 replicas.

A figure to track, not a test. It starts a throw-away PostgreSQL and Redis
(Debian's packages, loopback), then real `aptmesh tracker` processes, and
drives them with wrk over keep-alive connections: every request is an edge
(one of N peer ids and ports) re-announcing one of T torrents, which is what
N edges seeding T torrents each do every `interval` seconds. It prints the
announce rate that load needs next to the rate served at saturation, wrk's
p99 latency, and the store load (PostgreSQL transactions per second, which
announces do not cause, and Redis commands per announce), for:

- 1 replica, swarms in memory (the embedded default),
- 1 replica, swarms on Redis,
- 2 replicas, swarms on Redis (half the connections each).

The index is PostgreSQL in every run; the trackers run as open trackers so
that no million records need publishing first (the allow-list check is one
set lookup either way). On a shared 2-core machine the figures are a floor.

    .venv/bin/python bench/tracker_scale.py [--edges 100] [--torrents 10000]
        [--interval 1800] [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from aptmesh_tracker import wire
from tests.fixtures.datastores import PostgresServer, RedisServer, free_port


@dataclass(frozen=True)
class Served:
    rate: float  # announces per second
    p99_ms: float


def paths(edges: int, torrents: int, count: int = 20_000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    hashes = [rng.randbytes(20) for _ in range(min(torrents, count))]
    peer_ids = [rng.randbytes(20) for _ in range(edges)]
    out = []
    for _ in range(count):
        edge = rng.randrange(edges)
        request = wire.AnnounceRequest(
            info_hash=rng.choice(hashes),
            peer_id=peer_ids[edge],
            port=1024 + edge,
            left=0 if rng.random() < 0.9 else 1 << 20,  # edges mostly seed what they hold
            numwant=50,
        )
        out.append("/announce?" + wire.encode_announce_request(request))
    return out


def wait_listening(port: int, within: float = 30.0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"tracker on port {port} did not start")


def start_tracker(
    workdir: Path, store: str, peer_store: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "aptmesh_cli",
        "tracker",
        "--open-tracker=true",
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        "--grpc-bind=127.0.0.1:0",
        f"--store={store}",
        f"--peer-store={peer_store}",
        f"--db-path={workdir / 'unused.sqlite3'}",
        "--log-level=warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return process, port


def wrk(ports: list[int], script: Path, seconds: int, connections: int) -> Served:
    runs = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{max(1, connections // len(ports))}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    rate, p99 = 0.0, 0.0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        got = re.search(r"Requests/sec:\s+([\d.]+)", out)
        tail = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
        if not got or not tail:
            raise SystemExit(f"wrk failed: {out}")
        rate += float(got.group(1))
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[tail.group(2)]
        p99 = max(p99, float(tail.group(1)) * scale)
    return Served(rate, p99)


def postgres_transactions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def redis_commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=100)
    parser.add_argument("--torrents", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=1800)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian package `wrk`: make sysdeps)")
    needed = args.edges * args.torrents / args.interval
    postgres, redis_server = PostgresServer(), RedisServer()
    results: list[tuple[str, Served, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = workdir / "announce.lua"
        listed = ",\n".join(f'"{p}"' for p in paths(args.edges, args.torrents))
        script.write_text(
            f"local paths = {{\n{listed}\n}}\nlocal i = math.random(#paths)\n"
            "request = function()\n  i = i % #paths + 1\n"
            "  return wrk.format('GET', paths[i])\nend\n"
        )
        try:
            postgres.start()
            redis_server.start()
            store = postgres.new_database()
            for name, peer_store, replicas in (
                ("1 replica, swarms in memory", "", 1),
                ("1 replica, swarms on Redis", redis_server.url(), 1),
                ("2 replicas, swarms on Redis", redis_server.url(), 2),
            ):
                trackers = [start_tracker(workdir, store, peer_store) for _ in range(replicas)]
                try:
                    before = redis_commands(redis_server.url())
                    transactions = postgres_transactions(store)
                    served = wrk([p for _, p in trackers], script, args.seconds, args.connections)
                    commands = redis_commands(redis_server.url()) - before
                    pg_rate = (postgres_transactions(store) - transactions) / args.seconds
                    per = commands / (served.rate * args.seconds) if peer_store else 0.0
                    results.append((name, served, per, pg_rate))
                finally:
                    for process, _ in trackers:
                        process.terminate()
                        process.wait(timeout=10)
        finally:
            postgres.remove()
            redis_server.remove()
    print(
        f"load: {args.edges} edges x {args.torrents} torrents every {args.interval} s"
        f" = {needed:,.0f} announces/s needed; wrk, {args.connections} connections,"
        f" {args.seconds} s per run"
    )
    for name, served, per, pg_rate in results:
        redis_load = f", {per:.1f} Redis commands/announce" if per else ""
        print(
            f"{name:30} {served.rate:9,.0f} announces/s served ({served.rate / needed:5.1f}x"
            f" needed), p99 {served.p99_ms:6.1f} ms, PostgreSQL {pg_rate:.1f} transactions/s"
            f"{redis_load}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
