"""Discovery against misbehaving edges (issue 13): a deadline, bounded parsing, contained failures.

The misbehaving edge is a real HTTP server on loopback that answers
`/healthz` at once but trickles, inflates or nests its `/_aptmesh/edges`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from aptmesh_apt_method.config import MAX_EDGES, MeshConfig
from aptmesh_apt_method.edges import (
    MAX_LISTING_BYTES,
    Edge,
    ListingError,
    discover,
    discovery_deadline,
    fetch_listing,
    parse_listing,
)

from .servers import Site, serve
from .test_apt import POOL_PATH, apt_download, assert_clean_success, uri

Answer = Callable[[socket.socket, threading.Event], None]


def nested(depth: int) -> bytes:
    return b'{"edges": ' + b"[" * depth + b"]" * depth + b"}"


def trickle(body: bytes, every: float) -> Answer:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        conn.sendall(head)
        for byte in body:
            if stop.wait(every):
                return
            conn.sendall(bytes([byte]))

    return answer


def whole(body: bytes) -> Answer:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    return answer


@contextmanager
def bad_edge(host: str, listing: Answer, files: dict[str, bytes] | None = None) -> Iterator[str]:
    """An edge whose /healthz is fine, whose listing is `listing`, serving `files` too."""
    server = socket.create_server((host, 0))
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while not stop.is_set():
                request = reader.readline()
                if not request:
                    return
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                path = request.split()[1].decode()
                if path == "/_aptmesh/edges":
                    listing(conn, stop)
                    return
                body = b"ok\n" if path == "/healthz" else (files or {}).get(path)
                status = "200 OK" if body is not None else "404 Not Found"
                body = body if body is not None else b"no\n"
                head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n"
                conn.sendall(head.encode() + body)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://{host}:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        server.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(5)


def test_a_listing_of_45000_urls_is_parsed_in_linear_time() -> None:
    entries = [
        {"id": str(n), "url": f"http://10.{n // 65536}.{n // 256 % 256}.{n % 256}:3142"}
        for n in range(45_000)
    ]
    body = json.dumps({"edges": entries}).encode()
    if len(body) > MAX_LISTING_BYTES:  # as sent over the wire it is refused by size at once
        with pytest.raises(ListingError, match="larger than"):
            parse_listing(body)
    small = json.dumps({"edges": entries[: MAX_LISTING_BYTES // 64]}).encode()
    started = time.monotonic()
    edges = parse_listing(small)
    assert time.monotonic() - started < 2.0  # quadratic de-duplication took 43 s for 45,000
    assert len(edges) == MAX_EDGES


def test_a_deeply_nested_listing_is_a_listing_error() -> None:
    with pytest.raises(ListingError, match="nested too deeply"):
        parse_listing(nested(100_000))


@pytest.mark.parametrize(
    "listing",
    [
        pytest.param(whole(nested(100_000)), id="nested"),
        pytest.param(whole(b"x" * (MAX_LISTING_BYTES + 10)), id="huge"),
        pytest.param(whole(b"\xff\xfe{"), id="garbage"),
    ],
)
def test_a_broken_listing_costs_only_the_listing(listing: Answer) -> None:
    with bad_edge("127.0.0.4", listing) as url:
        edges = discover(MeshConfig(edges=(url,), cache_seconds=0))
    assert edges == [Edge(url)]


def test_a_trickled_listing_is_cut_at_the_deadline() -> None:
    body = json.dumps({"edges": [{"id": "x", "url": "http://127.0.0.9:1"}]}).encode()
    with bad_edge("127.0.0.4", trickle(body, 0.5)) as url:
        config = MeshConfig(edges=(url,), cache_seconds=0)
        started = time.monotonic()
        edges = discover(config)
        elapsed = time.monotonic() - started
        with pytest.raises((ListingError, OSError)):
            fetch_listing(url, 0.3)  # a per-read timeout alone would wait for every byte
    assert edges == [Edge(url)]
    assert elapsed < discovery_deadline(config) + 0.5


def test_apt_through_a_trickling_edge_within_the_deadline(
    method_path: Path, tmp_path: Path
) -> None:
    """The done-means of issue 13: apt is answered within the documented deadline."""
    from .test_apt import DEB

    body = json.dumps({"edges": [{"id": "x", "url": "http://127.0.0.9:1"}] * 50}).encode()
    with ExitStack() as stack:
        mirror = stack.enter_context(serve(Site(files={POOL_PATH: DEB}), "127.0.0.1"))
        files = {f"/{mirror.hostport}{POOL_PATH}": DEB}
        url = stack.enter_context(bad_edge("127.0.0.4", trickle(body, 0.5), files))
        started = time.monotonic()
        result, out = apt_download(
            method_path, tmp_path, uri(mirror), f"Acquire::mesh::Edges={url}"
        )
        elapsed = time.monotonic() - started
        assert_clean_success(result, out)
        assert mirror.site.paths() == []  # the edge served it, after the listing was cut
    # 2.5 s of discovery, plus apt's own start (it runs the method twice) on two busy cores
    assert elapsed < discovery_deadline(MeshConfig()) + 3.0, elapsed
