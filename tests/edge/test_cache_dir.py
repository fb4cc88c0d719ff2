"""The edge and its cache directory: one edge per directory, readiness that sees it go, a
start on a full disk, and a cache limit larger than the disk that never fills it (issue 15's
drills found each; tests/drills runs them over real processes too)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.files import DirectoryInUse
from aptmesh_edge.app import start
from aptmesh_edge.cache import BlobStore
from tests.fixtures.disks import fill

from .conftest import EdgeFactory, edge_config, fetch_indexes, get, prefix_url


async def test_a_second_edge_on_one_cache_directory_is_refused(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path
) -> None:
    await make_edge(cache_dir=tmp_path / "cache")
    with pytest.raises(DirectoryInUse, match=r"edge cache directory .* in use .*pid \d+"):
        await start(edge_config(debrepo, tmp_path / "cache"))


async def test_readiness_says_when_the_cache_directory_is_gone(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    edge = await make_edge(cache_dir=tmp_path / "cache")
    async with client.get(f"{edge.http_url}/readyz") as response:
        assert response.status == 200
    shutil.rmtree(tmp_path / "cache")
    async with client.get(f"{edge.http_url}/readyz") as response:
        assert response.status == 503


async def test_an_edge_restarts_on_a_full_disk_and_serves(
    make_edge: EdgeFactory,
    client: aiohttp.ClientSession,
    debrepo: DebRepo,
    small_disk: Path,
) -> None:
    cache = small_disk / "cache"
    edge = await make_edge(cache_dir=cache)
    await fetch_indexes(client, edge, debrepo)
    for name in ("aptmesh-tiny", "libaptmesh-test1"):
        pkg = debrepo.package(name)
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    await edge.stop()
    fill(small_disk)
    again = await make_edge(cache_dir=cache)  # its journal cannot be rewritten: it starts
    async with client.get(f"{again.http_url}/readyz") as response:
        assert response.status == 200
    await fetch_indexes(client, again, debrepo)
    for name in ("aptmesh-tiny", "aptmesh-medium"):  # from the cache; through, uncached
        pkg = debrepo.package(name)
        status, body, _ = await get(client, prefix_url(again, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256


def test_the_disk_bounds_the_cache_least_recently_used_first(small_disk: Path) -> None:
    """A limit far beyond the disk: `make_room` evicts as `max_bytes` would, ahead of ENOSPC."""
    blobs = BlobStore(small_disk / "cache", max_bytes=1 << 40)
    blobs.open()
    names = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    for name in names:  # 5 x 300 KiB of a 2 MiB disk
        tmp = blobs.new_tmp()
        tmp.write_bytes(b"x" * 300 * 1024)
        blobs.commit(tmp, name, 300 * 1024)
    assert shutil.disk_usage(small_disk).free < 600 * 1024
    blobs.get(names[0])  # just used: evicted last
    assert blobs.make_room(600 * 1024, 0)
    assert shutil.disk_usage(small_disk).free >= 600 * 1024
    assert names[0] in blobs and names[1] not in blobs
    assert not blobs.make_room(4 << 20, 0)  # more than the disk: every unpinned blob goes
