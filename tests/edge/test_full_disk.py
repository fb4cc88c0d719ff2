"""The edge on a full disk (a real 2 MiB tmpfs as its cache): a client gets the whole,
correct file or a clear error (a 5xx with a message, or a cut connection), never a
cut-short body that looks complete; nothing partial stays in the cache; the edge goes on
serving; the failure is logged and counted.

A package that does not fit is streamed from the upstream without being cached (what
apt-cacher-ng users expect); an index that does not fit (it must be stored whole to be
verified) is refused with 503."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.packages import PackageService

from .conftest import EdgeFactory, fetch_indexes, get, metric, prefix_url

# Mounting needs root; the tests share nothing but keep to one worker to spare memory.
pytestmark = pytest.mark.xdist_group("full_disk")

DISK_FULL = "aptmesh_edge_disk_full_total"


def fill(disk: Path) -> Path:
    """Takes every free byte of `disk` with one file (deleted to free the space again)."""
    ballast = disk / "ballast"
    block = b"\0" * 65536
    with ballast.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(block)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    assert os.statvfs(disk).f_bavail == 0
    return ballast


def partial_files(cache_dir: Path) -> list[Path]:
    """Files of the cache that are not whole, verified files (temporary ones)."""
    return sorted(p for p in (cache_dir / "tmp").rglob("*") if p.is_file())


def blobs(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "blobs").rglob("*") if p.is_file())


async def fetch(client: aiohttp.ClientSession, url: str, **kwargs: object) -> tuple[int, bytes]:
    """(status, body); the body is b"<cut>" if the connection was cut before its end."""
    async with client.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        try:
            return resp.status, await resp.read()
        except aiohttp.ClientPayloadError:
            return resp.status, b"<cut>"


async def still_serving(client: aiohttp.ClientSession, edge: RunningEdge, repo: DebRepo) -> None:
    status, body, _ = await get(client, f"{edge.http_url}/healthz")
    assert (status, body) == (200, b"ok\n")
    small = next(p for p in repo.packages if not p.swarmed)
    status, body = await fetch(client, prefix_url(edge, small.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == small.sha256


async def test_a_package_larger_than_the_free_space_is_streamed_from_upstream_uncached(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, debrepo: DebRepo, small_disk: Path
) -> None:
    cache_dir = small_disk / "cache"
    edge = await make_edge(cache_dir=cache_dir)
    await fetch_indexes(client, edge, debrepo)
    huge = debrepo.package("aptmesh-huge")
    assert huge.size > os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    url = prefix_url(edge, huge.filename)

    status, body = await fetch(client, url)
    assert status == 200
    assert len(body) == huge.size and hashlib.sha256(body).hexdigest() == huge.sha256
    # A range is answered from the same uncached stream.
    status, body = await fetch(client, url, headers={"Range": "bytes=1000-2999"})
    assert (status, body) == (206, debrepo.read(huge.filename)[1000:3000])
    status, body = await fetch(client, url, headers={"Range": "bytes=-10"})
    assert (status, body) == (206, debrepo.read(huge.filename)[-10:])
    async with client.head(url) as resp:
        assert resp.status == 200 and resp.content_length == huge.size

    await edge.files.wait_idle()
    assert partial_files(cache_dir) == []
    assert huge.sha256 not in blobs(cache_dir)
    assert metric(edge, DISK_FULL, file_class="package", action="pass_through") == 4
    assert metric(edge, "aptmesh_edge_requests_total", file_class="package", cache="bypass") == 4
    await still_serving(client, edge, debrepo)


async def test_a_disk_that_fills_during_a_download_cuts_the_response_and_keeps_nothing(
    make_edge: EdgeFactory,
    client: aiohttp.ClientSession,
    debrepo: DebRepo,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache_dir = small_disk / "cache"
    edge = await make_edge(cache_dir=cache_dir)
    await fetch_indexes(client, edge, debrepo)
    huge = debrepo.package("aptmesh-huge")
    url = prefix_url(edge, huge.filename)
    # The free-space check passed (the disk filled behind it, another writer): the edge
    # starts caching and runs into ENOSPC after the headers went out.
    monkeypatch.setattr(PackageService, "_room_for", lambda self, size: True)
    status, body = await fetch(client, url)
    assert status == 200 and body == b"<cut>"  # never a short body that looks whole
    await edge.files.wait_idle()
    assert partial_files(cache_dir) == [] and blobs(cache_dir) == []
    assert metric(edge, DISK_FULL, file_class="package", action="failed") == 1
    assert os.statvfs(small_disk).f_bfree > 400  # the space came back
    await still_serving(client, edge, debrepo)
    # With the check back, the next client gets the whole file, uncached.
    monkeypatch.undo()
    status, body = await fetch(client, url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == huge.sha256
    await edge.files.wait_idle()
    assert partial_files(cache_dir) == [] and huge.sha256 not in blobs(cache_dir)


async def test_an_unverified_file_that_does_not_fit_is_cut_never_served_short(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, debrepo: DebRepo, small_disk: Path
) -> None:
    # No `apt-get update` first: the edge knows no size to check, starts, and runs out.
    cache_dir = small_disk / "cache"
    edge = await make_edge(cache_dir=cache_dir)
    huge = debrepo.package("aptmesh-huge")
    status, body = await fetch(client, prefix_url(edge, huge.filename))
    assert body == b"<cut>" or (
        status == 200 and hashlib.sha256(body).hexdigest() == huge.sha256
    ), (status, len(body))
    await edge.files.wait_idle()
    assert partial_files(cache_dir) == [] and blobs(cache_dir) == []
    assert metric(edge, DISK_FULL, file_class="package", action="failed") == 1
    await fetch_indexes(client, edge, debrepo)
    await still_serving(client, edge, debrepo)


async def test_an_index_that_does_not_fit_is_refused_with_503_and_fetched_once_there_is_room(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, debrepo: DebRepo, small_disk: Path
) -> None:
    cache_dir = small_disk / "cache"
    edge = await make_edge(cache_dir=cache_dir)
    ballast = fill(small_disk)
    for path in (debrepo.INRELEASE, debrepo.PACKAGES + ".xz"):
        status, body = await fetch(client, prefix_url(edge, path))
        assert status == 503, (status, body[:200])
        assert b"disk is full" in body and b"No space left on device" in body, body
        assert partial_files(cache_dir) == []
    assert metric(edge, DISK_FULL, file_class="index", action="failed") >= 2
    status, body, _ = await get(client, f"{edge.http_url}/healthz")
    assert (status, body) == (200, b"ok\n")

    ballast.unlink()
    await fetch_indexes(client, edge, debrepo)
    await still_serving(client, edge, debrepo)
    assert partial_files(cache_dir) == []


async def test_an_index_whose_metadata_does_not_fit_leaves_no_half_stored_copy(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, debrepo: DebRepo, small_disk: Path
) -> None:
    # The data file moved in, then its metadata found the disk full: neither may stay.
    cache_dir = small_disk / "cache"
    edge = await make_edge(cache_dir=cache_dir)
    put = edge.indexes._write_meta

    def full(key: str, meta: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    edge.indexes._write_meta = full  # type: ignore[method-assign]
    status, body = await fetch(client, prefix_url(edge, debrepo.INRELEASE))
    assert status == 503 and b"disk is full" in body
    assert [p for p in (cache_dir / "index").rglob("*") if p.is_file()] == []
    edge.indexes._write_meta = put  # type: ignore[method-assign]
    await fetch_indexes(client, edge, debrepo)
