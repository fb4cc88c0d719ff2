"""The report's junk-key load against a real `aptmesh edge` process: its memory, by its own
figures (/proc/PID/status), stays inside the hot path's byte bound (issue 13)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aptmesh.testing import free_port
from tests.edge.conftest import Serve

REQUESTS = 4000
QUERY = "q" * 2000  # each request's query string: distinct, long (the report used ~99,000)
TARGET_CACHE = 1024**2


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def edge_process(fake_edge: Serve, tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    data = os.urandom(60_000)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=data)

    upstream = await fake_edge(serve)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
    env.update(
        APTMESH_EDGE_HTTP_HOST="127.0.0.1",
        APTMESH_EDGE_HTTP_PORT=str(port),
        APTMESH_EDGE_GRPC_BIND="127.0.0.1:0",
        APTMESH_EDGE_CACHE_DIR=str(tmp_path / "cache"),
        APTMESH_EDGE_UPSTREAMS=f"bench.example.org=http://{upstream.removeprefix('http://')}",
        APTMESH_EDGE_VERIFY_MODE="off",
        APTMESH_EDGE_TARGET_CACHE_BYTES=str(TARGET_CACHE),
        APTMESH_EDGE_LOG_LEVEL="error",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aptmesh_cli",
        "edge",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/bench.example.org/debian/pool/main/b/b/b_1_all.deb"
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as client:
            while True:
                try:
                    async with client.get(url) as resp:
                        if resp.status == 200:
                            await resp.read()
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline and proc.returncode is None, "no edge"
                await asyncio.sleep(0.1)
        yield proc.pid, url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_junk_query_strings_do_not_grow_the_edge(edge_process: tuple[int, str]) -> None:
    pid, url = edge_process
    async with aiohttp.ClientSession() as client:
        for _ in range(20):  # warm: the file is a memory hit, its answer is on the hot path
            async with client.get(url) as resp:
                await resp.read()
        before = peak = rss(pid)
        sent = 0

        async def worker(n: int) -> None:
            nonlocal sent, peak
            for i in range(n, REQUESTS, 8):
                async with client.get(f"{url}?{QUERY}{i}") as resp:
                    assert resp.status == 200
                    await resp.read()
                sent += 1
                if i % 200 == 0:
                    peak = max(peak, rss(pid))

        await asyncio.gather(*(worker(n) for n in range(8)))
    peak = max(peak, rss(pid))
    assert sent == REQUESTS
    growth = peak - before
    # Before the fix each request kept ~9 KB (its raw target twice): ~36 MB here. Now the
    # growth is allocator noise plus at most the hot path's bound.
    assert growth < TARGET_CACHE + 12 * 1024**2, f"RSS grew {growth / 2**20:.1f} MiB"
