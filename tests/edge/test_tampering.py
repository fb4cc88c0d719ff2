"""Every source through the same tampering cases (DESIGN integrity rule 4, checked.py).

The upstream over HTTP, the swarm (a lying tracker record and a seed of the tampered bytes:
libtorrent's piece checks pass, only the index's SHA-256 can tell) and the edge of the zone
(a lying parent) each send a small (memory-cache) and a large package file with a wrong last
byte, a wrong first byte, a short body or a long body. Whatever a source sends, no client
(nor another edge relaying it) ever holds a complete body that did not verify, a client of a
small tampered file gets no byte of it, and no cache entry or seeded file holds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aptmesh.debrepo import DebRepo, RepoPackage
from aptmesh.swarm import Swarm, SwarmSettings
from aptmesh.testing import wait_until
from aptmesh.torrent import make_torrent
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.decisions import FallbackReason
from aptmesh_edge.packages import PackageService
from aptmesh_edge.site import VIA_HEADER
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.records import PackageRecord
from tests.edge.conftest import (
    HOST,
    EdgeFactory,
    Serve,
    fetch_indexes,
    metric,
    prefix_url,
)
from tests.edge.test_site import ZONE, owning_id, register
from tests.fixtures.tracker import TOKEN

TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "wrong_last_byte": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    "wrong_first_byte": lambda data: bytes([data[0] ^ 1]) + data[1:],
    "short_body": lambda data: data[:-1],
    "long_body": lambda data: data + b"\0",
}
SAME_SIZE = ("wrong_last_byte", "wrong_first_byte")
SMALL, LARGE = "aptmesh-tiny", "aptmesh-huge"  # 20 KiB and 3 MiB: memory_file_max is 2 MiB


@dataclass(frozen=True)
class Received:
    status: int
    body: bytes
    complete: bool  # the response ended as announced (not cut)


async def receive(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Received:
    got = bytearray()
    async with client.get(url, headers=headers or {}) as resp:
        try:
            while chunk := await resp.content.readany():
                got += chunk
            complete = True
        except aiohttp.ClientPayloadError:
            complete = False
        return Received(resp.status, bytes(got), complete)


def assert_never_unverified(received: Received, pkg: RepoPackage, small: bool) -> None:
    """What a client (or a relaying edge) got is the verified file, an error, or less than a
    whole body; for a small file not a byte of it."""
    if received.status != 200:
        assert received.status in (502, 504), received
        return
    if received.complete:
        assert hashlib.sha256(received.body).hexdigest() == pkg.sha256
        return
    assert len(received.body) < pkg.size
    if small:
        assert received.body == b"", "a small tampered file sent bytes before it verified"


async def assert_nothing_kept(edge: RunningEdge, pkg: RepoPackage, bad: bytes) -> None:
    """No cache entry or seeded file holds the tampered bytes; a kept file is the real one."""
    await edge.files.wait_idle()
    assert edge.blobs.get(hashlib.sha256(bad).hexdigest()) is None
    blob = edge.blobs.get(pkg.sha256)
    if blob is not None:
        assert hashlib.sha256(blob.path.read_bytes()).hexdigest() == pkg.sha256
    assert not list(edge.blobs.tmp_dir.iterdir())
    if edge.swarm_side is not None:
        for sha256 in edge.swarm_side.seeding:
            seeded = edge.blobs.get(sha256)
            assert seeded is not None
            assert hashlib.sha256(seeded.path.read_bytes()).hexdigest() == sha256


def package_path(path: str) -> str:
    """A request path at a fake upstream or edge, as a repository path."""
    return path.removeprefix(f"{HOST}/").removeprefix("debian/")


@pytest.mark.parametrize("disk", ["room", "full"])
@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_tampered_upstream(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    fake_edge: Serve,
    monkeypatch: pytest.MonkeyPatch,
    tampering: str,
    size: str,
    disk: str,
) -> None:
    """With a full disk the file is passed through from the upstream, checked the same way."""
    pkg = debrepo.package(size)
    bad = TAMPERINGS[tampering](debrepo.read(pkg.filename))

    async def upstream(request: web.Request) -> web.Response:
        path = package_path(request.match_info["path"])
        return web.Response(body=bad if path == pkg.filename else debrepo.read(path))

    url = await fake_edge(upstream)
    edge = await make_edge(upstreams=(f"{HOST}={url}",))
    await fetch_indexes(client, edge, debrepo)
    if disk == "full":
        monkeypatch.setattr(PackageService, "_room_for", lambda self, size: False)
    for _ in range(2):  # nothing was kept: asked again, it is fetched and refused again
        received = await receive(client, prefix_url(edge, pkg.filename))
        assert not received.complete or received.status != 200, "a tampered file completed"
        assert_never_unverified(received, pkg, size == SMALL)
        await assert_nothing_kept(edge, pkg, bad)
    assert edge.blobs.get(pkg.sha256) is None
    if disk == "full":
        action = {"file_class": "package", "action": "pass_through"}
        assert metric(edge, "aptmesh_edge_disk_full_total", **action) == 2
    else:
        kind = "package_sha256" if tampering in SAME_SIZE else "package_size"
        failures = metric(edge, "aptmesh_verification_failures_total", service="edge", kind=kind)
        assert failures == 2


@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_tampered_swarm(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    tampering: str,
    size: str,
) -> None:
    """A tracker record that names the index's SHA-256 and size but a torrent of other bytes,
    and a seed of those bytes: libtorrent's piece checks pass; the edge's check does not."""
    pkg = debrepo.package(size)
    bad = TAMPERINGS[tampering](debrepo.read(pkg.filename))
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / pkg.path.name).write_bytes(bad)
    hashed = make_torrent(seed_dir / pkg.path.name)
    torrent = hashed.torrent
    # Straight into the store: the index's own check refuses a torrent of another size.
    tracker.stores.index.put(
        PackageRecord(
            sha256=pkg.sha256,
            size=pkg.size,
            name=torrent.name,
            info_hash_v1=torrent.info_hash_v1,
            info_hash_v2=torrent.info_hash_v2,
            piece_length=torrent.piece_length,
            torrent=torrent.metainfo,
        )
    )
    seedbox = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder"))
    try:
        seedbox.add(torrent.metainfo, seed_dir, seed=True, trackers=[tracker.announce_url])
        edge = await make_edge(
            tracker_grpc=tracker.grpc_target,
            tracker_announce=tracker.announce_url,
            zone="swarm-only",
            swarm_min_size=1024,  # the small file goes through the swarm too
            swarm_timeout=10.0,
            swarm_stall_seconds=10.0,
            swarm_webseed_delay=60.0,  # only the seed sends bytes
        )
        await fetch_indexes(client, edge, debrepo)
        received = await receive(client, prefix_url(edge, pkg.filename))
        assert_never_unverified(received, pkg, size == SMALL)
        await assert_nothing_kept(edge, pkg, bad)
    finally:
        seedbox.apply(stop_tracker_timeout=0)  # the tracker shares this loop
        seedbox.close()
    failures = metric(
        edge, "aptmesh_verification_failures_total", service="edge", kind="package_sha256"
    )
    if tampering in SAME_SIZE:  # the swarm delivered it all; the file's SHA-256 refused it
        assert received.status == 200 and not received.complete
        assert failures == 1
        assert edge.blobs.get(pkg.sha256) is None
    else:  # a torrent of the wrong size is not used: the upstream sent the real file
        assert received.complete and received.status == 200
        reason = FallbackReason.SWARM_ERROR.value
        assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", reason=reason) == 1
        assert failures == 0


@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_tampered_zone_edge(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    fake_edge: Serve,
    tampering: str,
    size: str,
) -> None:
    """This edge's parent in the zone sends tampered bytes. An edge below, which gets them as
    they arrive, is cut when they are refused; the file then comes from the upstream, and
    clients get only that."""
    pkg = debrepo.package(size)
    bad = TAMPERINGS[tampering](debrepo.read(pkg.filename))

    async def parent(request: web.Request) -> web.Response:
        assert package_path(request.match_info["path"]) == pkg.filename
        return web.Response(body=bad)

    url = await fake_edge(parent)
    edge = await make_edge(
        tracker_grpc=tracker.grpc_target,
        tracker_announce=tracker.announce_url,
        publish_token=TOKEN,
        zone=ZONE,
        swarm_min_size=8 * 1024**2,  # the large file goes through the zone's tree too
    )
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == 1, what="edge registered"
    )
    await register(tracker, owning_id(edge, [pkg]), url)
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == 2, what="parent registered"
    )
    await edge.refresh_edges()
    await fetch_indexes(client, edge, debrepo)
    target = prefix_url(edge, pkg.filename)
    below = await receive(client, target, {VIA_HEADER: "below"})
    assert_never_unverified(below, pkg, small=False)  # an edge below checks the bytes itself
    assert below.body != bad
    await assert_nothing_kept(edge, pkg, bad)
    received = await receive(client, target)
    assert received.status == 200 and received.complete
    assert_never_unverified(received, pkg, size == SMALL)
    assert metric(edge, "aptmesh_edge_site_fetches_total", result="failed") == 1
    # The parent's bytes went only to the edge below, before they were refused (a body of the
    # wrong length is refused before a byte of it is written).
    from_parent = 0 if below.complete else len(below.body)
    assert metric(edge, "aptmesh_edge_served_bytes_total", source="edge") == from_parent
    assert debrepo.server.requests(pkg.filename) == 1
