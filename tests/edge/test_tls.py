"""`/HTTPS///` and `https://` upstreams only over verified TLS (issue 13: no scheme downgrade).

A local TLS server with a throw-away CA made by the `openssl` binary plays the upstream."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.edge.conftest import EdgeFactory, get

BODY = b"served over TLS only\n"


@dataclass(frozen=True)
class TlsUpstream:
    url: str  # https://localhost:PORT (it speaks TLS only: an answer proves TLS was used)
    ca: Path


async def absolute_form(edge_url: str, target: str) -> tuple[int, bytes]:
    """`GET https://HOST/path` sent to the edge as it is (aiohttp's client would CONNECT)."""
    host, port = edge_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate it signed for localhost and 127.0.0.1."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "1", "-subj", "/CN=aptmesh test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=localhost")  # fmt: skip
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "1", "-extfile", ext)  # fmt: skip
    return ca, cert, key


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[TlsUpstream]:
    ca, cert, key = make_ca_and_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    yield TlsUpstream(f"https://localhost:{port}", ca)
    await runner.cleanup()


async def test_an_https_request_reaches_an_https_upstream_over_verified_tls(
    make_edge: EdgeFactory, tls_upstream: TlsUpstream, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(
        upstreams=(tls_upstream.url,), verify_mode="off", upstream_ca_file=tls_upstream.ca
    )
    authority = tls_upstream.url.removeprefix("https://")
    status, body, _ = await get(client, f"{edge.http_url}/HTTPS///{authority}/files/a.txt")
    assert (status, body) == (200, BODY)
    assert await absolute_form(edge.http_url, f"https://{authority}/files/b.txt") == (200, BODY)
    # The plain-HTTP forms name another origin (http://HOST): not configured, refused.
    status, _, _ = await get(client, f"{edge.http_url}/{authority}/files/a.txt")
    assert status == 403


async def test_an_upstream_certificate_the_ca_bundle_does_not_vouch_for_is_refused(
    make_edge: EdgeFactory, tls_upstream: TlsUpstream, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(upstreams=(tls_upstream.url,), verify_mode="off")  # system CAs
    authority = tls_upstream.url.removeprefix("https://")
    status, body, _ = await get(client, f"{edge.http_url}/HTTPS///{authority}/files/a.txt")
    assert status == 502 and BODY not in body


async def test_an_https_request_for_an_http_only_upstream_is_refused(
    make_edge: EdgeFactory, fake_edge: object, client: aiohttp.ClientSession
) -> None:
    from tests.edge.conftest import Serve

    assert callable(fake_edge)
    serve: Serve = fake_edge
    asked: list[str] = []

    async def plain(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"plain")

    upstream = await serve(plain)
    authority = upstream.removeprefix("http://")
    for entries in ((upstream,), (f"mirror.example.org={upstream}",)):
        edge = await make_edge(upstreams=entries, verify_mode="off")
        host = authority if entries == (upstream,) else "mirror.example.org"
        status, body, _ = await get(client, f"{edge.http_url}/HTTPS///{host}/files/a.txt")
        assert status == 403 and b"plain HTTP" in body, body
        status, _ = await absolute_form(edge.http_url, f"https://{host}/files/a.txt")
        assert status == 403
    assert asked == []
