"""Upstreams that apply a content coding: the edge asks for identity and handles the rest."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.upstream import coding_action
from tests.edge.conftest import HOST, EdgeFactory, get, prefix_url

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Runs an aiohttp application on loopback; returns the edge's upstream entry for it."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"{HOST}=http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def forced(repo: DebRepo, coding: str) -> web.Application:
    """A server that codes every body with `coding`, whatever the client accepts."""

    async def handle(request: web.Request) -> web.Response:
        data = repo.read(request.match_info["path"])
        body = (
            gzip.compress(data) if coding == "gzip" and not request.path.endswith(".gz") else data
        )
        return web.Response(body=body, headers={"Content-Encoding": coding})

    app = web.Application()
    app.router.add_get("/debian/{path:.*}", handle)
    return app


def test_coding_action() -> None:
    assert coding_action("", "dists/x/Packages", 200) == "raw"
    assert coding_action("identity", "dists/x/Packages", 200) == "raw"
    assert coding_action("gzip", "dists/x/Packages", 200) == "gunzip"
    assert coding_action("X-GZIP", "dists/x/Packages", 200) == "gunzip"
    assert coding_action("gzip", "dists/x/Packages.gz", 200) == "raw"
    assert coding_action("gzip", "pool/a.deb", 206) == "refuse"  # a coded range cannot resume
    assert coding_action("br", "dists/x/Packages", 200) == "refuse"
    assert coding_action("gzip, br", "dists/x/Packages", 200) == "refuse"


async def assert_serves_the_archive_as_signed(
    edge: RunningEdge, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    """Indexes (a .gz one included) and a package reach the client byte for byte."""
    for path in (debrepo.INRELEASE, debrepo.PACKAGES, debrepo.PACKAGES + ".gz"):
        status, body, _ = await get(client, prefix_url(edge, path))
        assert status == 200, body
        assert body == debrepo.read(path)
    pkg = debrepo.package("aptmesh-huge")
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256


async def test_packages_from_aiohttp_static_handler(
    make_edge: EdgeFactory, debrepo: DebRepo, serve: Serve, client: aiohttp.ClientSession
) -> None:
    """aiohttp's static handler answers `Packages` with `Packages.gz` and `Content-Encoding:
    gzip` to a client that accepts gzip; the edge asks for identity and gets the file."""
    app = web.Application()
    app.router.add_static("/debian", debrepo.root)
    edge = await make_edge(upstreams=(await serve(app),))
    await assert_serves_the_archive_as_signed(edge, debrepo, client)


async def test_gzip_coding_is_decoded_except_for_gz_files(
    make_edge: EdgeFactory, debrepo: DebRepo, serve: Serve, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(upstreams=(await serve(forced(debrepo, "gzip")),))
    await assert_serves_the_archive_as_signed(edge, debrepo, client)


async def test_other_codings_are_refused_with_a_clear_error(
    make_edge: EdgeFactory, debrepo: DebRepo, serve: Serve, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(upstreams=(await serve(forced(debrepo, "br")),))
    status, body, _ = await get(client, prefix_url(edge, debrepo.INRELEASE))
    assert status == 502
    assert b"Content-Encoding 'br'" in body
    assert edge.indexes.get(f"http_{HOST}_80/debian/{debrepo.INRELEASE}") is None
