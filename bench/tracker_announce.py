"""Announces per second of the real tracker next to a minimal aiohttp handler's requests per second.

A figure to track, not a test. Both servers run as separate processes pinned
to CPU 0 (one core each, one at a time); the load generator (wrk if installed,
else a bounded Python client) runs on the other CPU, over keep-alive
connections on loopback. The tracker runs as an open tracker, and every
request announces a different peer into one of 1,000 swarms, so the hot path
does real parsing, swarm updates and peer selection.

    .venv/bin/python bench/tracker_announce.py [--seconds 5] [--connections 32]

`--instructions` measures instead what one announce costs, independent of the
machine's load: each server runs under `valgrind --tool=callgrind` twice, once
answering W + A and once W + 3A fixed requests from a bounded Python client
(W warm-up), and the difference of the two runs' instruction counts over 2A is
the cost of one request, server start and stop cancelling out. Repeatable to
a fraction of a percent on a busy machine, where requests per second are not.

    .venv/bin/python bench/tracker_announce.py --instructions [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from aptmesh.testing import free_port
from aptmesh_tracker import wire

MINIMAL = """
import sys
from aiohttp import web
body = b"d8:completei1e10:incompletei1e8:intervali1800e12:min intervali60e5:peers0:e"
async def handler(request):
    return web.Response(body=body, content_type="text/plain")
app = web.Application()
app.router.add_get("/announce", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


WARMUP = 300  # requests before counting: imports, caches and swarms settle
LOAD_CONNECTIONS = 8


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def paths(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    swarms = [rng.randbytes(20) for _ in range(1000)]
    out = []
    for i in range(count):
        request = wire.AnnounceRequest(
            info_hash=swarms[i % len(swarms)],
            peer_id=rng.randbytes(20),
            port=1024 + i % 60000,
            left=rng.choice((0, 1 << 20)),
            event="started" if i % 10 == 0 else "none",
            numwant=50,
        )
        out.append("/announce?" + wire.encode_announce_request(request))
    return out


def wait_listening(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def run_wrk(port: int, seconds: int, connections: int, workdir: Path) -> float:
    script = workdir / "announce.lua"
    listed = ",\n".join(f'"{p}"' for p in paths(20_000))
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n"
        "  return wrk.format('GET', paths[i])\nend\n"
    )
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        preexec_fn=lambda: pin(1),  # noqa: PLW1509 - affinity only
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if not match:
        raise SystemExit(f"wrk failed: {done.stdout}{done.stderr}")
    return float(match.group(1))


async def python_load(port: int, seconds: int, connections: int) -> float:
    urls = [f"http://127.0.0.1:{port}{p}" for p in paths(20_000)]
    end = time.monotonic() + seconds
    count = 0

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal count
        i = offset
        while time.monotonic() < end:
            async with session.get(urls[i % len(urls)]) as response:
                await response.read()
            count += 1
            i += connections

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session, k) for k in range(connections)))
        return count / (time.monotonic() - started)


async def fixed_load(port: int, targets: list[str], connections: int) -> None:
    """Sends every target once, over `connections` keep-alive connections (raw HTTP/1.1)."""
    queue = list(reversed(targets))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                writer.write(f"GET {queue.pop()} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)content-length: *(\d+)", head)
                if not head.startswith(b"HTTP/1.1 200") or match is None:
                    raise SystemExit(f"unexpected answer: {head[:200]!r}")
                await reader.readexactly(int(match.group(1)))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


def instructions(command: list[str], port: int, requests: int, workdir: Path) -> int:
    """Instructions (callgrind's Ir) the server ran for `requests` requests after a warm-up,
    all its threads, start and stop cancelled out by a second run with three times as many."""
    counts = []
    targets = paths(WARMUP + 3 * requests)
    for n in (requests, 3 * requests):
        out = workdir / f"callgrind.{port}.{n}"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, deadline=600)
            asyncio.run(fixed_load(port, targets[: WARMUP + n], LOAD_CONNECTIONS))
        finally:
            server.terminate()
            server.wait(timeout=600)
        match = re.search(r"^(?:summary|totals): *(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise SystemExit(f"no instruction count in {out}")
        counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) // (2 * requests)


def measure(command: list[str], port: int, seconds: int, connections: int, workdir: Path) -> float:
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: pin(0),  # noqa: PLW1509 - affinity only
    )
    try:
        wait_listening(port)
        if shutil.which("wrk"):
            return run_wrk(port, seconds, connections, workdir)
        pin(1)
        return asyncio.run(python_load(port, seconds, connections))
    finally:
        server.terminate()
        server.wait(timeout=10)


def tracker_command(port: int, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aptmesh_cli",
        "tracker",
        "--open-tracker=true",
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        "--grpc-bind=127.0.0.1:0",
        f"--db-path={workdir / 'bench.sqlite3'}",
        "--log-level=warning",
    ]


def minimal_command(port: int) -> list[str]:
    return [sys.executable, "-c", MINIMAL, str(port)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per request (callgrind)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="with --instructions")
    parser.add_argument(
        "--only", choices=("tracker", "minimal"), help="with --instructions: one server"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.instructions:
            print(f"callgrind, {args.requests} and {3 * args.requests} requests after {WARMUP}")
            counts = {}
            for name in ("tracker", "minimal"):
                if args.only in (None, name):
                    port = free_port()
                    tracker = name == "tracker"
                    argv = tracker_command(port, workdir) if tracker else minimal_command(port)
                    counts[name] = instructions(argv, port, args.requests, workdir)
                    print(f"{name:25} {counts[name]:10,d} instructions per request", flush=True)
            if len(counts) == 2:
                ratio = counts["minimal"] / counts["tracker"]
                print(f"ratio (minimal/tracker):  {ratio:10.2f}  (goal >= 0.7)")
            return 0
        port = free_port()
        announces = measure(
            tracker_command(port, workdir), port, args.seconds, args.connections, workdir
        )
        port = free_port()
        minimal = measure(minimal_command(port), port, args.seconds, args.connections, workdir)
    tool = "wrk" if shutil.which("wrk") else "python client"
    print(
        f"load generator: {tool}, {args.connections} keep-alive connections, {args.seconds} s each"
    )
    print(f"tracker /announce:        {announces:10,.0f} announces/s")
    print(f"minimal aiohttp handler:  {minimal:10,.0f} requests/s")
    print(f"ratio:                    {announces / minimal:10.2f}  (goal >= 0.7 and >= 15,000/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
