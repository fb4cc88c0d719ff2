"""Hostile clients against a real edge on loopback: every bound holds, no request kills a
handler or wedges a connection (issue 13, the edge's side)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.http import parse_range
from tests.edge.conftest import HOST, EdgeFactory, fetch_indexes, get, metric, prefix_url

DEADLINE = 10.0


def _port(edge: RunningEdge) -> int:
    return int(edge.http_url.rsplit(":", 1)[1])


async def _exchange(edge: RunningEdge, data: bytes) -> tuple[bytes, bool]:
    """Sends raw bytes; returns everything the edge sent and whether it closed the
    connection (within DEADLINE)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(edge))
    writer.write(data)
    await writer.drain()
    received = b""
    closed = False
    try:
        async with asyncio.timeout(DEADLINE):
            while chunk := await reader.read(65536):
                received += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return received, closed


def _task_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize(
    "host",
    [
        b"xn--a.example.org",  # punycode that does not decode
        b"a" * 64 + b".example.org",  # a label over 63 characters
        b"d\xc3\xa9b.example.org",  # a non-ASCII byte
        b"xn--.example.org",
    ],
)
async def test_a_forward_proxy_request_for_a_bad_idna_host_gets_400_and_is_closed(
    edge: RunningEdge, host: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET http://" + host + b"/debian/x.deb HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    received, closed = await _exchange(edge, request)
    assert received.split(b" ", 2)[1] == b"400", received[:200]
    assert closed
    assert not _task_errors(caplog)
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(r.exc_info is None for r in refusals)


async def test_junk_query_strings_mint_no_entries(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    """The 99,000 distinct long query strings of the report, scaled down: every one is
    answered from memory, and the hot path remembers one target, not one per request."""
    await fetch_indexes(client, edge, debrepo)
    tiny = debrepo.package("aptmesh-tiny")
    url = prefix_url(edge, tiny.filename)
    for _ in range(2):  # a miss, then the hit that makes it hot
        status, body, _ = await get(client, url)
        assert status == 200
    before = metric(edge, "aptmesh_edge_target_cache_bytes")
    junk = "q" * 2000
    for i in range(300):
        status, body, _ = await get(client, f"{url}?{junk}{i}")
        assert status == 200 and len(body) == tiny.size
    assert metric(edge, "aptmesh_edge_target_cache_bytes") == before
    assert metric(edge, "aptmesh_edge_requests_total", file_class="package", cache="hit") >= 300


async def test_distinct_junk_paths_stay_inside_the_byte_bound(
    make_edge: EdgeFactory, client: aiohttp.ClientSession
) -> None:
    bound = 64 * 1024
    edge = await make_edge(target_cache_bytes=bound)
    for i in range(200):
        await get(client, prefix_url(edge, f"pool/main/{'j' * 1500}{i}.txt"))
    assert 0 < metric(edge, "aptmesh_edge_target_cache_bytes") <= bound


def test_range_takes_ascii_digits_only() -> None:
    assert parse_range("bytes=\u0660-\u0661", 10) is None  # Arabic-Indic digits: ignored
    assert parse_range("bytes=-\u0661", 10) is None
    assert parse_range("bytes=\u00b2-", 10) is None
    assert parse_range("bytes=0-1", 10) is not None


async def test_a_non_ascii_range_is_ignored_not_applied(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    path = debrepo.INRELEASE
    request = (
        f"GET /{HOST}/debian/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + "Range: bytes=\u0660-\u0661\r\n\r\n".encode()
    )
    received, closed = await _exchange(edge, request)
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    assert received.endswith(debrepo.read(path)) and closed


async def test_a_head_over_the_bound_gets_431_and_is_closed(make_edge: EdgeFactory) -> None:
    edge = await make_edge(http_max_head_bytes=4096)
    headers = "".join(f"X-Junk-{i}: {'v' * 100}\r\n" for i in range(60))
    received, closed = await _exchange(edge, f"GET /healthz HTTP/1.1\r\n{headers}".encode())
    assert received.startswith(b"HTTP/1.1 431") and closed
    assert metric(edge, "aptmesh_edge_http_refused_total", limit="head_size") == 1


async def test_connections_over_the_bound_are_closed_at_once(make_edge: EdgeFactory) -> None:
    edge = await make_edge(http_max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", _port(edge)) for _ in range(2)]
    received, closed = await _exchange(edge, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (received, closed) == (b"", True)
    assert metric(edge, "aptmesh_edge_http_refused_total", limit="connections") == 1
    for _, writer in held:
        writer.close()
    deadline = time.monotonic() + DEADLINE
    while metric(edge, "aptmesh_edge_http_connections") > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    received, _ = await _exchange(
        edge, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert received.startswith(b"HTTP/1.1 200")


async def test_idle_and_trickled_connections_are_timed_out(make_edge: EdgeFactory) -> None:
    edge = await make_edge(http_head_timeout=0.5)
    started = time.monotonic()
    received, closed = await _exchange(edge, b"")  # idle: never sends a head
    assert closed and received == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(edge))
    trickle_closed = False
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            trickle_closed = True
            break
        if reader.at_eof():
            trickle_closed = True
            break
        await asyncio.sleep(0.02)
    assert trickle_closed or await reader.read() == b""
    writer.close()
    assert time.monotonic() - started < DEADLINE


async def test_junk_pipelined_after_connection_close_spoils_nothing(edge: RunningEdge) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nJUNK\x00\r\n\r\n"
    received, closed = await _exchange(edge, request)
    assert received.startswith(b"HTTP/1.1 200") and closed
    assert b"400" not in received.split(b"\r\n", 1)[0]


async def test_requests_over_the_in_flight_bound_get_503(
    make_edge: EdgeFactory, fake_edge: object
) -> None:
    from tests.edge.conftest import Serve

    assert callable(fake_edge)
    serve: Serve = fake_edge
    release = asyncio.Event()

    async def slow(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        await release.wait()
        return aiohttp.web.Response(body=b"late")

    upstream = await serve(slow)
    edge = await make_edge(upstreams=(upstream,), verify_mode="off", http_max_in_flight=1)
    host = upstream.removeprefix("http://")
    async with aiohttp.ClientSession() as client:
        first = asyncio.ensure_future(get(client, f"{edge.http_url}/{host}/a.txt"))
        deadline = time.monotonic() + DEADLINE
        while metric(edge, "aptmesh_edge_http_in_flight") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        status, _, headers = await get(client, f"{edge.http_url}/{host}/b.txt")
        assert status == 503 and headers.get("Retry-After") == "1"
        release.set()
        assert (await first)[:2] == (200, b"late")
    assert metric(edge, "aptmesh_edge_http_refused_total", limit="in_flight") == 1


async def test_an_upstream_confined_to_its_path_serves_it_and_nothing_else(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    """`HOST/debian=URL/debian` (what `aptmesh up` configures): the archive, its InRelease
    and packages included, is served; nothing beside it on the upstream host is."""
    base = f"http://127.0.0.1:{debrepo.server.port}/debian"
    edge = await make_edge(upstreams=(f"{HOST}/debian={base}",))
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-tiny")
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and len(body) == pkg.size
    for outside in (f"/{HOST}/secret.txt", f"/{HOST}/debian-other/x"):
        status, _, _ = await get(client, f"{edge.http_url}{outside}")
        assert status == 403, outside


async def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(
    make_edge: EdgeFactory, fake_edge: object, client: aiohttp.ClientSession
) -> None:
    from tests.edge.conftest import Serve

    assert callable(fake_edge)
    serve: Serve = fake_edge
    data = b"z" * 1_500_000  # a memory hit, written in pieces

    async def upstream_file(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=data)

    upstream = await serve(upstream_file)
    edge = await make_edge(upstreams=(upstream,), verify_mode="off", http_send_timeout=0.5)
    url = f"{edge.http_url}/{upstream.removeprefix('http://')}/pool/main/a/a_1_all.deb"
    for _ in range(2):  # a miss, then a memory hit
        status, body, _ = await get(client, url)
        assert (status, len(body)) == (200, len(data))
    idle = metric(edge, "aptmesh_edge_http_connections")  # the client's pooled one
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", _port(edge)))
    target = url.removeprefix(edge.http_url)
    await asyncio.get_running_loop().sock_sendall(
        sock, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 3
    )
    deadline = time.monotonic() + DEADLINE
    while metric(edge, "aptmesh_edge_http_connections") <= idle and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert metric(edge, "aptmesh_edge_http_connections") == idle + 1
    while metric(edge, "aptmesh_edge_http_connections") > idle and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert metric(edge, "aptmesh_edge_http_connections") == idle  # cut, though never read
    sock.close()
