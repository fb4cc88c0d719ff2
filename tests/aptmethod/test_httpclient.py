"""The method's HTTP/1.1 client: against a real aiohttp server; its parser under Hypothesis."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from aptmesh_apt_method.fetch import EdgeSession, Job, Outcome
from aptmesh_apt_method.httpclient import MAX_HEADERS, MAX_LINE, Connection, HttpError, Response
from aptmesh_apt_method.uris import parse_mesh_uri

BODY = bytes(range(256)) * 700  # 179,200 bytes: several reads of the client's buffer


def _read_all(response: Response, step: int = 65536) -> bytes:
    parts = []
    while chunk := response.read(step):
        parts.append(chunk)
    return b"".join(parts)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[object]]]:
    """An aiohttp server on loopback; also the peer (address, port) of every request."""
    peers: list[object] = []
    release = asyncio.Event()

    async def fixed(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=BODY, headers={"Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(BODY), 10_000):
            await response.write(BODY[start : start + 10_000])
        await response.write_eof()
        return response

    async def not_modified(request: web.Request) -> web.Response:
        return web.Response(status=304)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 5)
        return web.Response(body=b"late")

    app = web.Application()
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/prefix/mirror.example/debian/{tail:.*}", fixed)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/304", not_modified)
    app.router.add_get("/slow", slow)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", peers
    finally:
        loop.call_soon_threadsafe(release.set)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_content_length_and_chunked_bodies_on_one_kept_alive_connection(
    server: tuple[str, list[object]],
) -> None:
    url, peers = server
    conn = Connection.for_url(url, 2.0, 5.0)
    try:
        before = len(peers)
        for path in ("/fixed", "/chunked", "/fixed", "/304", "/fixed"):
            response = conn.get(path, {"User-Agent": "test"})
            body = _read_all(response, 4096)
            assert response.complete and not response.will_close
            if path == "/304":
                assert (response.status, body) == (304, b"")
            else:
                assert (response.status, body) == (200, BODY)
        assert response.getheader("last-modified") == "Thu, 01 Jan 2026 00:00:00 GMT"
        assert len(set(peers[before:])) == 1  # every /fixed came over the same connection
    finally:
        conn.close()


def test_an_edge_session_fetches_under_the_edges_path_prefix(
    server: tuple[str, list[object]], tmp_path: Path
) -> None:
    url, _ = server
    target = parse_mesh_uri("mesh+http://mirror.example/debian/pool/a.deb")
    job = Job("mesh+http://mirror.example/debian/pool/a.deb", target, str(tmp_path / "a.deb"))
    session = EdgeSession(f"{url}/prefix", 1.0, 5.0)
    try:
        result = session.fetch(job)
    finally:
        session.close()
    assert (result.outcome, result.size) == (Outcome.DONE, len(BODY))
    assert (tmp_path / "a.deb").read_bytes() == BODY


def test_the_read_timeout_raises_oserror(server: tuple[str, list[object]]) -> None:
    url, _ = server
    conn = Connection.for_url(url, 2.0, 0.2)
    try:
        with pytest.raises(OSError):
            conn.get("/slow")
    finally:
        conn.close()


def test_a_refused_connection_raises_oserror() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(OSError):
            Connection("http", "127.0.0.1", port, 0.5, 0.5).get("/")


def test_no_line_breaks_in_requests() -> None:
    conn = Connection("http", "127.0.0.1", 9, 0.1, 0.1)
    with pytest.raises(ValueError):
        conn.get("/a b")
    with pytest.raises(ValueError):
        conn.get("/a", {"X": "1\r\nInjected: yes"})


def test_host_header_omits_the_default_port_and_brackets_ipv6() -> None:
    assert Connection("http", "::1", 80, 1, 1)._host_header == "[::1]"
    assert Connection("http", "edge", 3142, 1, 1)._host_header == "edge:3142"


# --- the parser, over byte streams ------------------------------------------------


def _frame(status: int, body: bytes, framing: str, cuts: list[int], ext: bool) -> bytes:
    head = f"HTTP/1.1 {status} Whatever\r\nX-Thing: a\r\n"
    if framing == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if framing == "close":
        return (head + "Connection: close\r\n\r\n").encode() + body
    out = [(head + "Transfer-Encoding: chunked\r\n\r\n").encode()]
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    for a, b in zip(points, points[1:], strict=False):
        size = f"{b - a:x}" + (";name=value" if ext else "")
        out.append(size.encode() + b"\r\n" + body[a:b] + b"\r\n")
    out.append(b"0\r\nTrailer: t\r\n\r\n")
    return b"".join(out)


@given(
    bodies=st.lists(st.binary(max_size=3000), min_size=1, max_size=3),
    framing=st.sampled_from(["length", "chunked"]),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
    ext=st.booleans(),
    step=st.integers(min_value=1, max_value=5000),
    last_closes=st.booleans(),
)
def test_framed_bodies_round_trip_and_leave_the_stream_at_the_next_answer(
    bodies: list[bytes], framing: str, cuts: list[int], ext: bool, step: int, last_closes: bool
) -> None:
    framings = [framing] * len(bodies)
    if last_closes:
        framings[-1] = "close"
    data = b"".join(_frame(200, b, f, cuts, ext) for b, f in zip(bodies, framings, strict=True))
    stream = io.BufferedReader(io.BytesIO(data))
    for body, kind in zip(bodies, framings, strict=True):
        response = Response(stream)
        assert response.status == 200 and response.getheader("X-Thing") == "a"
        assert _read_all(response, step) == body
        assert response.will_close == (kind == "close")
    assert stream.read() == b""


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_any_bytes_give_an_answer_or_http_error(data: bytes, step: int) -> None:
    stream = io.BufferedReader(io.BytesIO(data))
    with contextlib.suppress(HttpError):
        _read_all(Response(stream), step)


@given(st.binary(max_size=200))
def test_garbage_after_a_plausible_head_gives_an_answer_or_http_error(tail: bytes) -> None:
    for head in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.1 200 OK\r\n"):
        stream = io.BufferedReader(io.BytesIO(head + tail))
        with contextlib.suppress(HttpError):
            _read_all(Response(stream), 7)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_LINE + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * (MAX_HEADERS + 1) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"",
    ],
)
def test_malformed_or_truncated_answers_raise_http_error(data: bytes) -> None:
    stream = io.BufferedReader(io.BytesIO(data))
    with pytest.raises(HttpError):
        _read_all(Response(stream))


def test_interim_answers_are_skipped_and_http_1_0_closes() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    response = Response(io.BufferedReader(io.BytesIO(data)))
    assert (response.status, response.read(), response.will_close) == (200, b"ok", True)


def test_a_repeated_equal_length_is_one_and_both_framings_never_reuse_the_connection() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    response = Response(io.BufferedReader(io.BytesIO(data)))
    assert (response.read(), response.will_close) == (b"ok", False)
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )
    response = Response(io.BufferedReader(io.BytesIO(data)))
    assert (response.read(), response.will_close) == (b"ok", True)
