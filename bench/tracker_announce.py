"""Announces per second of the real tracker next to a minimal aiohttp handler's requests per second.

A figure to track, not a test. Both servers run as separate processes pinned
to CPU 0 (one core each, one at a time); the load generator (wrk if installed,
else a bounded Python client) runs on the other CPU, over keep-alive
connections on loopback. The tracker runs as an open tracker, and every
request announces a different peer into one of 1,000 swarms, so the hot path
does real parsing, swarm updates and peer selection.

    .venv/bin/python bench/tracker_announce.py [--seconds 5] [--connections 32]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        tracker = [
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
        announces = measure(tracker, port, args.seconds, args.connections, workdir)
        port = free_port()
        minimal = measure(
            [sys.executable, "-c", MINIMAL, str(port)],
            port,
            args.seconds,
            args.connections,
            workdir,
        )
    tool = "wrk" if shutil.which("wrk") else "python client"
    print(
        f"load generator: {tool}, {args.connections} keep-alive connections, {args.seconds} s each"
    )
    print(f"tracker /announce:        {announces:10,.0f} announces/s")
    print(f"minimal aiohttp handler:  {minimal:10,.0f} requests/s")
    print(f"ratio:                    {announces / minimal:10.2f}  (goal >= 0.7 and >= 10,000/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
