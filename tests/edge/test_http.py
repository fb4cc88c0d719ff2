"""The edge's HTTP cache against the signed repository fixture, through real HTTP clients."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import socket

import aiohttp
import pytest

from aptmesh.debian import by_hash_path
from aptmesh.debrepo import DebRepo, PackageSpec
from aptmesh_edge.app import RunningEdge
from tests.edge.conftest import (
    HOST,
    EdgeFactory,
    fetch_indexes,
    get,
    metric,
    prefix_url,
    scrape,
)


async def test_three_url_forms_serve_indexes_and_packages(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-medium")
    inrelease = debrepo.INRELEASE
    # Path prefix.
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    # Forward proxy: absolute-form request targets.
    for path, want in ((inrelease, debrepo.read(inrelease)), (pkg.filename, pkg.path.read_bytes())):
        status, body, _ = await get(client, f"http://{HOST}/debian/{path}", proxy=edge.http_url)
        assert (status, body) == (200, want)
    # HTTPS upstream through plain HTTP (the remap's backends serve it).
    status, body, _ = await get(client, f"{edge.http_url}/HTTPS///{HOST}/debian/{inrelease}")
    assert (status, body) == (200, debrepo.read(inrelease))
    tiny = debrepo.package("aptmesh-tiny")
    status, body, _ = await get(client, f"{edge.http_url}/HTTPS///{HOST}/debian/{tiny.filename}")
    assert status == 200 and hashlib.sha256(body).hexdigest() == tiny.sha256


async def test_percent_encoded_path_keeps_plus(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-medium")  # version 2.0~rc1+dfsg-1
    assert "+" in pkg.filename
    encoded = pkg.filename.replace("+", "%2B").replace("~", "%7E")
    status, body, _ = await get(client, prefix_url(edge, encoded))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))  # literal '+'
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert debrepo.server.requests(pkg.filename) == 1  # one cache entry for both spellings


async def test_ranges_and_conditional_requests(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    for name in ("aptmesh-tiny", "aptmesh-large"):  # from memory, and with sendfile
        pkg = debrepo.package(name)
        data = pkg.path.read_bytes()
        url = prefix_url(edge, pkg.filename)
        for _ in range(2):  # on the miss (download in flight) and from the cache
            status, body, headers = await get(client, url, headers={"Range": "bytes=100-1099"})
            assert (status, body) == (206, data[100:1100])
            assert headers["Content-Range"] == f"bytes 100-1099/{pkg.size}"
        status, body, headers = await get(client, url, headers={"Range": "bytes=-10"})
        assert (status, body) == (206, data[-10:])
        status, body, headers = await get(client, url, headers={"Range": f"bytes={pkg.size - 5}-"})
        assert (status, body, headers["Content-Range"]) == (
            206,
            data[-5:],
            f"bytes {pkg.size - 5}-{pkg.size - 1}/{pkg.size}",
        )
        status, _, headers = await get(client, url, headers={"Range": f"bytes={pkg.size}-"})
        assert (status, headers["Content-Range"]) == (416, f"bytes */{pkg.size}")
        status, body, headers = await get(client, url)
        assert status == 200 and body == data and "Content-Range" not in headers
        last_modified = headers["Last-Modified"]
        status, body, _ = await get(client, url, headers={"If-Modified-Since": last_modified})
        assert (status, body) == (304, b"")
        earlier = email.utils.formatdate(
            email.utils.parsedate_to_datetime(last_modified).timestamp() - 3600, usegmt=True
        )
        status, body, _ = await get(client, url, headers={"If-Modified-Since": earlier})
        assert (status, body) == (200, data)
        async with client.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(pkg.size)
            assert await resp.read() == b""
    # Index files: 304 against the upstream's Last-Modified.
    url = prefix_url(edge, debrepo.INRELEASE)
    status, _, headers = await get(client, url)
    status, body, _ = await get(
        client, url, headers={"If-Modified-Since": headers["Last-Modified"]}
    )
    assert (status, body) == (304, b"")


async def test_ten_concurrent_clients_cause_one_upstream_fetch(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-huge")
    debrepo.server.rate_limit = 6 * 1024 * 1024  # about half a second: the clients overlap
    results = await asyncio.gather(
        *(get(client, prefix_url(edge, pkg.filename)) for _ in range(10))
    )
    for status, body, _ in results:
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert debrepo.server.requests(pkg.filename) == 1
    assert metric(edge, "aptmesh_edge_served_bytes_total", source="upstream") >= 10 * pkg.size


async def test_bytes_reach_the_client_before_the_download_ends(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-huge")
    debrepo.server.rate_limit = 2 * 1024 * 1024
    async with client.get(prefix_url(edge, pkg.filename)) as resp:
        assert resp.status == 200
        first = await resp.content.readexactly(64 * 1024)
        upstream_sent = debrepo.server.bytes_served(pkg.filename)
        assert upstream_sent < pkg.size, "the whole file was fetched before the client got bytes"
        rest = await resp.read()
    assert hashlib.sha256(first + rest).hexdigest() == pkg.sha256


async def test_small_package_comes_from_upstream_once_then_from_cache(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    before = await scrape(client, edge)
    pkg = debrepo.package("aptmesh-tiny")
    for _ in range(3):
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert debrepo.server.requests(pkg.filename) == 1
    samples = await scrape(client, edge)

    def served(source: str) -> float:
        key = ("aptmesh_edge_served_bytes_total", f"source={source}")
        return samples[key] - before[key]

    assert served("upstream") == pkg.size
    assert served("cache") == 2 * pkg.size
    assert samples[("aptmesh_edge_requests_total", "cache=miss,file_class=package")] == 1
    assert samples[("aptmesh_edge_requests_total", "cache=hit,file_class=package")] == 2
    assert samples[("aptmesh_edge_cache_entries", "")] == 1


async def test_concurrent_index_requests_share_one_fetch_and_freeze(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    url = prefix_url(edge, debrepo.INRELEASE)
    results = await asyncio.gather(*(get(client, url) for _ in range(8)))
    assert all(
        status == 200 and body == debrepo.read(debrepo.INRELEASE) for status, body, _ in results
    )
    status, _, _ = await get(client, url)  # inside the freeze window: not revalidated
    assert status == 200
    assert debrepo.server.requests(debrepo.INRELEASE) == 1


async def test_index_revalidated_after_the_freeze_window(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(index_freeze_seconds=0.0)
    url = prefix_url(edge, debrepo.INRELEASE)
    await get(client, url)
    status, body, _ = await get(client, url)
    assert (status, body) == (200, debrepo.read(debrepo.INRELEASE))
    log = [r for r in debrepo.server.log if r.path == debrepo.INRELEASE]
    assert [r.status for r in log] == [200, 304]
    assert log[1].if_modified_since is not None
    assert metric(edge, "aptmesh_edge_requests_total", file_class="index", cache="revalidated") == 1


async def test_upstream_down_serves_cache_and_gives_502_for_the_rest(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(index_freeze_seconds=0.0)
    await fetch_indexes(client, edge, debrepo)
    tiny, large = debrepo.package("aptmesh-tiny"), debrepo.package("aptmesh-large")
    for pkg in (tiny, large):
        assert (await get(client, prefix_url(edge, pkg.filename)))[0] == 200
    debrepo.server.stop()
    for path in (debrepo.INRELEASE, debrepo.PACKAGES + ".xz"):
        status, body, _ = await get(client, prefix_url(edge, path))
        assert (status, body) == (200, debrepo.read(path))
    for pkg in (tiny, large):
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    status, body, _ = await get(client, prefix_url(edge, debrepo.package("aptmesh-huge").filename))
    assert status == 502 and b"cannot connect" in body
    status, body, _ = await get(client, prefix_url(edge, debrepo.PACKAGES + ".gz"))
    assert status == 502
    # The InRelease is stale; Packages.xz is as current as the InRelease that lists it (a hit).
    assert metric(edge, "aptmesh_edge_stale_index_served_total") == 1


async def test_upstream_timeout_gives_504(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    # A listener that accepts and never answers.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        edge = await make_edge(
            upstreams=(f"slow.example.org=http://127.0.0.1:{port}",),
            verify_mode="off",
            upstream_timeout=0.3,
        )
        status, body, _ = await get(client, f"{edge.http_url}/slow.example.org/debian/pool/a.deb")
        assert status == 504 and b"in time" in body
    finally:
        server.close()
        await server.wait_closed()


async def test_backends_are_tried_in_order(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    dead = "http://127.0.0.1:9"  # discard port: connection refused on loopback
    edge = await make_edge(
        upstreams=(f"{HOST}={dead}|http://127.0.0.1:{debrepo.server.port}",),
    )
    await fetch_indexes(client, edge, debrepo)


async def test_tampered_package_is_refused_and_never_cached(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    for name in ("aptmesh-tiny", "aptmesh-huge"):
        pkg = debrepo.package(name)
        debrepo.tamper(pkg.filename)
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(client, prefix_url(edge, pkg.filename))
        assert edge.blobs.get(pkg.sha256) is None
        assert not list(edge.blobs.tmp_dir.iterdir())
        kind = "package_sha256"
        assert metric(edge, "aptmesh_verification_failures_total", service="edge", kind=kind) >= 1
        # Asked again, it is fetched again (nothing was kept) and refused again.
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(client, prefix_url(edge, pkg.filename))
        assert debrepo.server.requests(pkg.filename) == 2


async def test_tampered_inrelease_is_refused_and_never_cached(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    debrepo.tamper(debrepo.INRELEASE)
    status, body, _ = await get(client, prefix_url(edge, debrepo.INRELEASE))
    assert status == 502 and b"InRelease" in body
    status, _, _ = await get(client, prefix_url(edge, debrepo.PACKAGES + ".xz"))
    assert status == 502
    assert not list((edge.config.cache_dir / "index").rglob("InRelease"))
    assert not list(edge.blobs.tmp_dir.iterdir())  # the refused copy is not left behind
    kind = "signature"
    assert metric(edge, "aptmesh_verification_failures_total", service="edge", kind=kind) >= 1
    # A package the (unverified) index names is not believed: passed through, never cached.
    pkg = debrepo.package("aptmesh-tiny")
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and edge.blobs.get(pkg.sha256) is None


def _by_hash(repo: DebRepo, path: str) -> str:
    """The by-hash copy of `path` (an index of the first suite) that its Release names."""
    rel = path.removeprefix(repo.DISTS + "/")
    return f"{repo.DISTS}/{by_hash_path(rel, repo.release().files[rel].sha256)}"


async def test_tampered_packages_index_is_refused(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    for path in (debrepo.PACKAGES + ".xz", _by_hash(debrepo, debrepo.PACKAGES + ".xz")):
        debrepo.tamper(path)
    status, _, _ = await get(client, prefix_url(edge, debrepo.PACKAGES + ".xz"))
    assert status == 502
    kind = "index_hash"
    assert metric(edge, "aptmesh_verification_failures_total", service="edge", kind=kind) == 1


async def test_an_index_by_name_is_fetched_by_the_hash_its_inrelease_names(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    assert debrepo.release().acquire_by_hash
    name = debrepo.PACKAGES + ".xz"
    debrepo.tamper(name)  # the by-name copy is wrong; the by-hash one is what Release names
    (await get(client, prefix_url(edge, debrepo.INRELEASE)))
    status, body, _ = await get(client, prefix_url(edge, name))
    assert status == 200
    assert (
        hashlib.sha256(body).hexdigest()
        == debrepo.release().files[name.removeprefix(debrepo.DISTS + "/")].sha256
    )
    assert debrepo.server.requests(name) == 0
    assert debrepo.server.requests(_by_hash(debrepo, name)) == 1


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/deb.example.org/debian/../../../etc/passwd", 400),
        ("/deb.example.org/debian/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/deb.example.org/debian//etc/passwd", 400),
        ("/deb.example.org/debian/pool/a%00.deb", 400),
        ("/deb.example.org/debian/pool/a%5c..%5c.deb", 400),
        ("/other.example.org/debian/dists/stable/InRelease", 403),
        ("http://other.example.org/debian/dists/stable/InRelease", 403),
        ("/deb.example.org:8080/debian/dists/stable/InRelease", 403),
        ("/nohost", 404),
    ],
)
async def test_escapes_and_unconfigured_hosts_are_refused(
    edge: RunningEdge, target: str, status: int
) -> None:
    port = int(edge.http_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    assert response.split(b" ", 2)[1] == str(status).encode(), response


async def test_service_routes(edge: RunningEdge, client: aiohttp.ClientSession) -> None:
    status, body, _ = await get(client, edge.http_url + "/")
    assert status == 406 and b"Usage Information" in body
    assert (await get(client, edge.http_url + "/healthz"))[0] == 200
    assert (await get(client, edge.http_url + "/readyz"))[0] == 200
    async with client.get(edge.http_url + "/_aptmesh/edges") as resp:
        payload = await resp.json()
    netloc = edge.http_url.removeprefix("http://")
    assert payload == {"edges": [{"id": netloc, "url": edge.http_url, "zone": ""}]}


async def test_auto_mode_passes_through_what_it_cannot_verify_without_caching_it(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    debrepo.sign_with_unknown_key()
    enforce = await make_edge()
    status, body, _ = await get(client, prefix_url(enforce, debrepo.INRELEASE))
    assert status == 502 and b"no public key" in body
    auto = await make_edge(verify_mode="auto")
    await fetch_indexes(client, auto, debrepo)
    pkg = debrepo.package("aptmesh-tiny")
    for _ in range(2):
        status, body, _ = await get(client, prefix_url(auto, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert auto.blobs.get(pkg.sha256) is None
    assert debrepo.server.requests(pkg.filename) == 2
    assert metric(auto, "aptmesh_edge_requests_total", file_class="package", cache="bypass") == 2
    # A bad signature is refused in auto mode too.
    debrepo.resign()
    debrepo.tamper(debrepo.INRELEASE)
    other = await make_edge(verify_mode="auto")
    status, _, _ = await get(client, prefix_url(other, debrepo.INRELEASE))
    assert status == 502


async def test_a_file_republished_under_the_same_name_is_served_anew(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(index_freeze_seconds=0.0)
    await fetch_indexes(client, edge, debrepo)
    old = debrepo.package("aptmesh-tiny")
    for _ in range(3):  # miss, hit, then the prepared fast path
        status, body, _ = await get(client, prefix_url(edge, old.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == old.sha256
    new = debrepo.add_package(PackageSpec("aptmesh-tiny", "1.0-1", 30 * 1024, section="utils"))
    assert new.filename == old.filename and new.sha256 != old.sha256
    await fetch_indexes(client, edge, debrepo)
    for _ in range(2):
        status, body, _ = await get(client, prefix_url(edge, new.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == new.sha256


async def test_upstream_dying_mid_file_cuts_the_client_and_keeps_nothing(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-huge")
    debrepo.server.rate_limit = 2 * 1024 * 1024
    async with client.get(prefix_url(edge, pkg.filename)) as resp:
        assert resp.status == 200
        await resp.content.readexactly(64 * 1024)
        debrepo.server.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert edge.blobs.get(pkg.sha256) is None
    assert not list(edge.blobs.tmp_dir.iterdir())
    debrepo.server.rate_limit = None
    debrepo.server.start()
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256


async def test_accepted_connections_have_tcp_nodelay(edge: RunningEdge) -> None:
    """Headers and a small body must not wait for the client's delayed ACK (Nagle)."""
    port = int(edge.http_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"ok\n")
    assert edge.http_site is not None
    server = edge.http_site.runner.server
    assert server is not None and server.connections
    for handler in server.connections:
        assert handler.transport is not None
        sock = handler.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    writer.close()
    await writer.wait_closed()


async def test_long_header_fields_are_accepted_without_handler_fallback(
    edge: RunningEdge, caplog: pytest.LogCaptureFixture
) -> None:
    """Header fields up to 16 KiB (long proxy/auth headers) are read, and every connection
    gets the configured request handler, not aiohttp's warning-logging fallback."""
    port = int(edge.http_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    long_value = "x" * 12000  # over aiohttp's default max_field_size of 8190
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {long_value}\r\n\r\n".encode())
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert not [r for r in caplog.records if "Failed to create request handler" in r.message]
