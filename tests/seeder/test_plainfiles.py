"""Plain files from a seeder's directory: hashed once per change, published with their URL,
served only under the SHA-256 they hashed to (a real seeder's HTTP port on loopback)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp

from aptmesh.torrent import parse_torrent
from aptmesh_seeder import app as seeder_app
from aptmesh_seeder.config import SeederConfig
from aptmesh_seeder.publish import MemoryPublisher


async def test_files_are_published_served_and_follow_the_directory(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "preseed.cfg").write_bytes(b"d-i debian-installer/locale string en_US\n")
    (files / ".hidden").write_bytes(b"not a collection file name")
    publisher = MemoryPublisher()
    config = SeederConfig(
        files_dir=files,
        data_dir=tmp_path / "data",
        grpc_bind="127.0.0.1:0",
        http_host="127.0.0.1",
        http_port=0,
        listen_host="127.0.0.1",
        listen_port=0,
        log_format="console",
    )
    running = await seeder_app.start(config, publisher=publisher, poll=False)
    try:
        assert running.files is not None
        (served,) = running.files.served()  # scanned at start
        sha = hashlib.sha256((files / "preseed.cfg").read_bytes()).hexdigest()
        assert (served.name, served.sha256) == ("preseed.cfg", sha)
        assert served.url == f"{running.http_url}/files/{sha}/preseed.cfg"
        record = publisher.records[sha]
        assert record.upstream_urls == (served.url,)
        assert parse_torrent(record.torrent).name == "preseed.cfg"
        async with aiohttp.ClientSession() as http:
            async with http.get(served.url) as resp:
                assert resp.status == 200
                assert await resp.read() == (files / "preseed.cfg").read_bytes()
            # Changed bytes: re-hashed at the next scan; the old URL serves nothing any more.
            (files / "preseed.cfg").write_bytes(b"d-i debian-installer/locale string de_DE\n")
            os.utime(files / "preseed.cfg", ns=(1, 1))
            (changed,) = await running.files.scan()
            assert changed.sha256 != sha and changed.sha256 in publisher.records
            async with http.get(served.url) as resp:
                assert resp.status == 404
            async with http.get(changed.url) as resp:
                assert resp.status == 200
            (files / "preseed.cfg").unlink()
            assert await running.files.scan() == []
            async with http.get(changed.url) as resp:
                assert resp.status == 404
    finally:
        if running.seeder.swarm is not None:
            running.seeder.swarm.apply(stop_tracker_timeout=0)
        await running.stop(0)
