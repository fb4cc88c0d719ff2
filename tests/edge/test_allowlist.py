"""One proxy line keeps working (issue 14): hosts allowed by pattern are served as themselves
(cached with verification where a signed index vouches), CONNECT is tunnelled to allowed
hosts only, and everything else is refused with a message naming the setting. Loopback
names stand in for the archives (the defaults allow Debian's and Ubuntu's domains)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aptmesh.debrepo import DebRepo, SigningKey, apt_env
from aptmesh_edge.config import DEFAULT_ALLOWED_HOSTS
from aptmesh_edge.urls import UrlError, parse_upstreams
from tests.edge.conftest import EdgeFactory, metric


def test_patterns_allow_names_under_a_domain_on_default_ports_only() -> None:
    upstreams = parse_upstreams((), ("*.example.org", "mirror.example.net:8080"))
    assert upstreams.allows("security.example.org", 80)
    assert upstreams.allows("a.b.example.org", 443)
    assert not upstreams.allows("example.org", 80)
    assert not upstreams.allows("evilexample.org", 80)
    assert not upstreams.allows("security.example.org", 8080)
    assert upstreams.allows("mirror.example.net", 8080)
    assert not upstreams.allows("mirror.example.net", 80)
    assert upstreams.tunnel("security.example.org:443") == ("security.example.org", 443)
    assert upstreams.tunnel("mirror.example.net:8080") == ("mirror.example.net", 8080)
    for refused in ("security.example.org:22", "security.example.org:80", "other.test:443"):
        with pytest.raises(UrlError) as err:
            upstreams.tunnel(refused)
        assert err.value.status == 403 and "APTMESH_EDGE_ALLOWED_HOSTS" in err.value.text


def test_the_defaults_cover_the_debian_and_ubuntu_security_archives() -> None:
    upstreams = parse_upstreams((), DEFAULT_ALLOWED_HOSTS)
    for host in ("security.debian.org", "security.ubuntu.com", "archive.ubuntu.com"):
        assert upstreams.allows(host, 80) and upstreams.tunnel(f"{host}:443")
    assert not upstreams.allows("example.com", 80)


async def test_a_client_with_only_a_proxy_line_updates_from_an_allowed_host(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    port = debrepo.server.port
    edge = await make_edge(upstreams=(), allowed_hosts=(f"127.0.0.1:{port}",))
    for name in ("a", "b"):
        apt = apt_env(
            tmp_path / name, debrepo.sources_line(), {"Acquire::http::Proxy": edge.http_url}
        )
        await asyncio.to_thread(apt.run, "apt-get", "update")
        await asyncio.to_thread(apt.run, "apt-get", "download", "aptmesh-large")
    pkg = debrepo.package("aptmesh-large")
    assert edge.blobs.get(pkg.sha256) is not None  # verified through its InRelease, cached
    assert debrepo.server.requests(pkg.filename) == 1
    # Anything else is refused, naming the setting.
    async with client.get("http://other.example.org/debian/x.deb", proxy=edge.http_url) as resp:
        text = await resp.text()
    assert resp.status == 403 and "--allowed-hosts" in text, text


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl missing"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_repo(debrepo: DebRepo, tls_cert: tuple[Path, Path]) -> AsyncIterator[int]:
    """The repository over HTTPS (a third-party HTTPS source) on loopback; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_cert)
    app = web.Application()
    app.router.add_static("/debian", debrepo.root)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_connect_is_tunnelled_to_allowed_hosts_only(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    tls_repo: int,
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    edge = await make_edge(upstreams=(), allowed_hosts=(f"127.0.0.1:{tls_repo}",))
    apt = apt_env(
        tmp_path / "apt",
        debrepo.sources_line(f"https://127.0.0.1:{tls_repo}/debian"),
        {"Acquire::http::Proxy": edge.http_url, "Acquire::https::CaInfo": str(tls_cert[0])},
    )
    update = await asyncio.to_thread(apt.run, "apt-get", "update")
    assert "W:" not in update.stderr and "E:" not in update.stderr, update.stderr
    await asyncio.to_thread(apt.run, "apt-get", "download", "aptmesh-tiny")
    (got,) = apt.root.glob("aptmesh-tiny_*.deb")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == debrepo.package("aptmesh-tiny").sha256
    assert metric(edge, "aptmesh_edge_tunnels_total", result="opened") >= 1
    assert edge.blobs.stats().entries == 0  # tunnelled bytes are never cached

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(edge.http_url.rsplit(":", 1)[1])
    )
    target = f"127.0.0.1:{debrepo.server.port}"  # allowed for nothing
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 403"), status
    assert metric(edge, "aptmesh_edge_tunnels_total", result="refused") == 1


async def test_an_allowed_host_whose_key_the_edge_lacks_is_passed_through(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path
) -> None:
    """The edge's keyring (enforce) does not hold this archive's key: its files pass through
    unverified (apt verifies them itself), nothing is cached, nothing is refused."""
    other = SigningKey.generate(tmp_path / "other-key")
    try:
        port = debrepo.server.port
        edge = await make_edge(
            upstreams=(), allowed_hosts=(f"127.0.0.1:{port}",), keyring=other.keyring
        )
        apt = apt_env(
            tmp_path / "apt", debrepo.sources_line(), {"Acquire::http::Proxy": edge.http_url}
        )
        update = await asyncio.to_thread(apt.run, "apt-get", "update")
        assert "W:" not in update.stderr and "E:" not in update.stderr, update.stderr
        await asyncio.to_thread(apt.run, "apt-get", "download", "aptmesh-tiny")
        (got,) = apt.root.glob("aptmesh-tiny_*.deb")
        assert (
            hashlib.sha256(got.read_bytes()).hexdigest() == debrepo.package("aptmesh-tiny").sha256
        )
        assert edge.blobs.stats().entries == 0
    finally:
        other.close()
