"""Fuzz targets for the edge's front end: the three URL forms, upstream resolution, `Range`,
and whole request heads sent to a real edge.

The pure parsers accept their input or refuse it with `UrlError` (whose status and text
are safe to send back); nothing else may escape. A resolved resource never leaves its
upstream, its route's path, or TLS when the client asked for it. A real edge answers
every head with one status line and never a 5xx, and closes the connection after a 400.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from aptmesh_edge.app import RunningEdge, start
from aptmesh_edge.config import EdgeConfig
from aptmesh_edge.http import (
    ByteRange,
    RangeNotSatisfiable,
    not_modified,
    parse_range,
    target_key,
)
from aptmesh_edge.site import parse_via
from aptmesh_edge.urls import UrlError, parse_target, parse_upstreams

pytestmark = pytest.mark.fuzz

UPSTREAMS = parse_upstreams(
    (
        "deb.example.org/debian=http://10.0.0.1/mirror/debian",
        "secure.example.org=https://10.0.0.2|http://10.0.0.3",
        "http://127.0.0.1:8081",
    )
)

# Pieces of request targets that reach the parsers' corners more often than random text.
target_parts = st.sampled_from(
    [
        "/", "http://", "https://", "HTTPS///", "deb.example.org", "secure.example.org",
        "127.0.0.1:8081", "xn--", "a" * 64, ".", "..", "%2e", "%2E%2E", "%00", "%ff", "?",
        "#", "@", ":", "[::1]", "debian", "pool", "x.deb", "\u00e9", "\\", "//", "+", "%2B",
    ]
)  # fmt: skip
targets = st.lists(target_parts | st.text(max_size=6), max_size=12).map("".join)


@given(targets | st.text(max_size=200))
@example("http://xn--a.example.org/debian/x")
@example("/HTTPS///deb.example.org/debian/x.deb")
@example("/deb.example.org/secret.txt")
@example("/127.0.0.1:8081/x?" + "q" * 5000)
@example("http://[")
def test_targets_parse_and_resolve_or_are_refused(raw: str) -> None:
    try:
        target = parse_target(raw)
        if target is None:
            return
        resource = UPSTREAMS.resolve(target)
    except UrlError as exc:
        assert 400 <= exc.status < 500 and exc.text
        return
    segments = resource.path.split("/")
    assert not {"", ".", ".."} & set(segments), resource.path
    assert "?" not in resource.key or "?" in target.path
    for url in resource.upstream_urls():
        assert any(url.startswith(base + "/") for base in resource.backends), url
        if resource.origin.scheme == "https":
            assert url.startswith("https://"), url  # never downgraded
    if resource.origin.host == "deb.example.org":
        assert resource.path.startswith("debian/")  # confined to its route


@given(targets)
@example("#?")
def test_target_key_drops_query_and_fragment(raw: str) -> None:
    key = target_key(raw)
    assert "?" not in key and target_key(key) == key
    assert raw.startswith(key)


range_parts = st.sampled_from(
    ["bytes", "=", "-", ",", " ", "0", "1", "9", "\u0660", "\u00b2", "x", "BYTES", "99999999999"]
)
ranges = st.lists(range_parts, max_size=10).map("".join)


@given(ranges | st.text(max_size=30), st.integers(min_value=0, max_value=10**12))
@example("bytes=\u0660-\u0661", 10)
@example("bytes=-0", 10)
@example("bytes=5-", 0)
def test_range_is_a_satisfiable_slice_ignored_or_416(header: str, size: int) -> None:
    try:
        wanted = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if wanted is None:
        return
    assert isinstance(wanted, ByteRange)
    assert 0 <= wanted.start < wanted.end <= size
    digits = header.partition("=")[2].replace("-", "").strip()
    assert digits.isascii()


dates = st.sampled_from(
    ["Sat, 01 Jan 2000 00:00:00 GMT", "Sat, 01 Jan 99999 00:00:00 GMT", "Mon, 31 Feb 2000",
     "-1", "", "\x00", "Sat, 01 Jan 2000 99:99:99 GMT", "Sat, 01 Jan 0000 00:00:00 +9999"]
) | st.text(max_size=40)  # fmt: skip


@given(dates, dates)
@example("Sat, 01 Jan 99999 00:00:00 GMT", "Sat, 01 Jan 2000 00:00:00 GMT")
def test_if_modified_since_compares_or_is_ignored(since: str, modified: str) -> None:
    assert not_modified(since, modified) in (True, False)


@given(st.text(max_size=200) | st.none())
def test_via_headers_parse_to_a_bounded_path(header: str | None) -> None:
    via = parse_via(header)
    assert all(part and part == part.strip() for part in via)


# -- whole heads against a real edge --------------------------------------------------------


async def _upstream() -> web.AppRunner:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=b"x" * 1000, headers={"Last-Modified": "Sat, 01 Jan 2000 00:00:00 GMT"}
        )

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


class EdgeThread:
    """A real edge on its own event loop in a thread, so that Hypothesis (synchronous) can
    talk to it over blocking sockets."""

    def __init__(self, cache_dir: Path) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        upstream = asyncio.run_coroutine_threadsafe(_upstream(), self._loop).result(30)
        self._upstream = upstream
        config = EdgeConfig(
            http_host="127.0.0.1",
            http_port=0,
            grpc_bind="127.0.0.1:0",
            cache_dir=cache_dir,
            # Every path there is a file (so Range, If-Modified-Since and HEAD reach the
            # send path); `unreachable.example.org` has nothing listening (502s).
            upstreams=(
                f"deb.example.org=http://127.0.0.1:{upstream.addresses[0][1]}",
                "unreachable.example.org=http://127.0.0.1:9",
            ),
            verify_mode="off",
            upstream_timeout=1.0,
            http_head_timeout=2.0,
            log_format="console",
            log_level="error",
        )
        self.edge: RunningEdge = asyncio.run_coroutine_threadsafe(start(config), self._loop).result(
            30
        )
        self.port = int(self.edge.http_url.rsplit(":", 1)[1])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.edge.stop(), self._loop).result(30)
        asyncio.run_coroutine_threadsafe(self._upstream.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def real_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeThread]:
    edge = EdgeThread(tmp_path_factory.mktemp("fuzz-edge"))
    yield edge
    edge.close()


header_names = st.sampled_from(
    ["Host", "Range", "If-Modified-Since", "If-Range", "Connection", "X-Aptmesh-Via",
     "Content-Length", "Transfer-Encoding", "Expect", "X\x00", "", " Host"]
)  # fmt: skip
header_values = st.sampled_from(
    ["bytes=0-1", "bytes=\u0660-\u0661", "close", "keep-alive", "chunked", "100-continue",
     "Sat, 01 Jan 2000 00:00:00 GMT", "a,b,c", "-1", "99999999999999999999", "\r\n", ""]
) | st.text(max_size=20)  # fmt: skip
heads = st.builds(
    lambda method, target, headers: (
        f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    ).encode("utf-8", "surrogateescape"),
    st.sampled_from(["GET", "HEAD", "POST", "get", "CONNECT", "G\u00e9T"]),
    targets
    | st.sampled_from(
        [
            "/healthz",
            "/metrics",
            "*",
            "http://deb.example.org/debian/x",
            "/deb.example.org/debian/pool/main/x.txt",
            "/deb.example.org/debian/pool/main/a/a_1_all.deb",
            "/unreachable.example.org/debian/x.txt",
        ]
    ),
    st.lists(st.tuples(header_names, header_values), max_size=6),
)


@given(heads)
@example(b"GET http://xn--a.example.org/x HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nJUNK\r\n\r\n")
def test_every_head_gets_one_answer_and_no_5xx_but_upstream_failures(
    real_edge: EdgeThread, head: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", real_edge.port), timeout=10) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    # The edge answered (a status line) or, for a head it could not frame, closed.
    if not received:
        return
    # (aiohttp answers a head it read as HTTP/0.9, such as `CONNECT  HTTP/1.1`, in kind.)
    assert received.startswith(b"HTTP/"), received[:100]
    status = int(received.split(b" ", 2)[1])
    # 502/504: the test's upstream does not listen; any other 5xx is the edge's own fault.
    assert status < 500 or status in (502, 503, 504), received[:300]
