"""The seeder's HTTP source takes the archive's bytes as they are hashed."""

from __future__ import annotations

import gzip

from aiohttp import web

from aptmesh import web as webhelp
from aptmesh_seeder.sources import HttpSource


async def test_a_gz_file_served_with_gzip_coding_stays_compressed() -> None:
    body = gzip.compress(b"Package: x\n")
    seen: list[str] = []

    async def packages_gz(request: web.Request) -> web.Response:
        # Apache's `AddEncoding x-gzip .gz` does this to index files.
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/debian/dists/s/main/binary-amd64/Packages.gz", packages_gz)
    site = await webhelp.start(app, "127.0.0.1", 0)
    source = HttpSource(f"{site.url}/debian")
    try:
        assert await source.index("dists/s/main/binary-amd64/Packages.gz") == body
        assert seen == ["identity"]
    finally:
        await source.close()
        await site.stop()
