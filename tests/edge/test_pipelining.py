"""apt pipelines up to 10 requests on one connection: the edge starts them all at once and
answers them in order (issue 19)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from tests.edge.conftest import EdgeFactory, Serve, metric

LATENCY = 0.4  # seconds the upstream takes to answer each request
COUNT = 10


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    return status, await reader.readexactly(length)


async def test_pipelined_misses_are_fetched_at_once_and_answered_in_order(
    make_edge: EdgeFactory, fake_edge: Serve
) -> None:
    in_upstream = 0
    most_at_once = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_upstream, most_at_once
        in_upstream += 1
        most_at_once = max(most_at_once, in_upstream)
        await asyncio.sleep(LATENCY)  # the upstream's latency, which the test measures against
        in_upstream -= 1
        return web.Response(body=request.path.encode() * 10)

    upstream = await fake_edge(slow)
    edge = await make_edge(upstreams=(upstream,), verify_mode="off")
    host = upstream.removeprefix("http://")
    names = [f"/files/f{i}.txt" for i in range(COUNT)]
    requests = b"".join(
        f"GET /{host}{name} HTTP/1.1\r\nHost: edge\r\n\r\n".encode() for name in names
    )
    reader, writer = await asyncio.open_connection(*edge.http_url[7:].split(":"))
    started = time.monotonic()
    writer.write(requests)
    answers = [await asyncio.wait_for(_read_response(reader), 30) for _ in names]
    elapsed = time.monotonic() - started
    # Every started request gave its in-flight slot back with its answer, the connection
    # still open (a slot held until it closes would starve the edge).
    deadline = time.monotonic() + 10
    while metric(edge, "aptmesh_edge_http_in_flight") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert metric(edge, "aptmesh_edge_http_in_flight") == 0
    writer.close()
    assert answers == [(200, name.encode() * 10) for name in names]
    assert most_at_once > COUNT // 2, most_at_once
    # One after another would take COUNT latencies; at once, about one.
    assert elapsed < 3 * LATENCY, f"{COUNT} pipelined misses took {elapsed / LATENCY:.1f} latencies"
