"""Large packages through the swarm: a real tracker, two edges with libtorrent, the fixture
repository as upstream and web seed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp

from aptmesh.debrepo import DebRepo
from aptmesh.swarm import Swarm, SwarmSettings
from aptmesh.torrent import make_torrent, parse_torrent
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.decisions import SourceKind
from aptmesh_seeder import app as seeder_app
from aptmesh_seeder.config import SeederConfig
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import NotFound, TrackerClient
from aptmesh_tracker.records import PackageRecord
from tests.edge.conftest import EdgeFactory, fetch_indexes, get, metric, prefix_url
from tests.fixtures.tracker import TOKEN


async def swarm_edge(
    make_edge: EdgeFactory, tracker: RunningTracker, zone: str, **changes: Any
) -> RunningEdge:
    return await make_edge(
        **{
            "tracker_grpc": tracker.grpc_target,
            "tracker_announce": tracker.announce_url,
            "publish_token": TOKEN,
            "zone": zone,
            "swarm_timeout": 5.0,
            "swarm_stall_seconds": 5.0,
            **changes,
        }
    )


async def test_second_edge_gets_a_large_package_from_the_first_through_the_swarm(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    pkg = debrepo.package("aptmesh-huge")
    first = await swarm_edge(make_edge, tracker, "zone-a")
    second = await swarm_edge(make_edge, tracker, "zone-b")
    await fetch_indexes(client, first, debrepo)
    await fetch_indexes(client, second, debrepo)

    # Nobody has a torrent yet: the first edge fetches over HTTP, then makes, publishes
    # and seeds the torrent.
    status, body, _ = await get(client, prefix_url(first, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert metric(first, "aptmesh_edge_upstream_fallbacks_total", reason="no_torrent") == 1
    async with TrackerClient(tracker.grpc_target) as index:

        async def published() -> bool:
            try:
                return (await index.get(pkg.sha256)).size == pkg.size
            except NotFound:
                return False

        await first.files.wait_idle()
        assert await published()
    assert first.swarm_side is not None and pkg.sha256 in first.swarm_side.seeding

    # The upstream goes away: the second edge can only get the file from the first edge.
    debrepo.server.stop()
    from_upstream = metric(second, "aptmesh_edge_served_bytes_total", source="upstream")
    status, body, _ = await get(client, prefix_url(second, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert metric(second, "aptmesh_edge_served_bytes_total", source="swarm") == pkg.size
    assert metric(second, "aptmesh_edge_served_bytes_total", source="upstream") == from_upstream
    assert second.blobs.get(pkg.sha256) is not None
    assert second.swarm_side is not None
    second.swarm_side.update_metrics()
    kind = {"service": "edge", "direction": "download"}
    assert metric(second, "aptmesh_torrent_payload_bytes_total", **kind) >= pkg.size
    # The second edge now seeds it from its cache; both are in the registry's list.
    await second.files.wait_idle()
    assert pkg.sha256 in second.swarm_side.seeding
    await second.refresh_edges()
    assert len(second.listed_edges) == 2
    async with client.get(second.http_url + "/_aptmesh/edges") as resp:
        listed = await resp.json()
    assert {e["url"] for e in listed["edges"]} == {first.http_url, second.http_url}


async def test_unreachable_tracker_falls_back_to_upstream_and_counts_it(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(tracker_grpc="127.0.0.1:9", tracker_announce="")
    await fetch_indexes(client, edge, debrepo)
    for name, reason in (
        ("aptmesh-huge", "tracker_unreachable"),
        ("aptmesh-tiny", "below_threshold"),
    ):
        pkg = debrepo.package(name)
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
        assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", reason=reason) == 1


async def publish(tracker: RunningTracker, pkg_path: Path) -> bytes:
    """Publishes a file's torrent to the index, as a seeder would; returns the metainfo."""
    hashed = make_torrent(pkg_path)
    async with TrackerClient(tracker.grpc_target, token=TOKEN) as index:
        await index.publish(
            PackageRecord(
                sha256=hashed.sha256,
                size=hashed.torrent.size,
                name=hashed.torrent.name,
                info_hash_v1=hashed.torrent.info_hash_v1,
                info_hash_v2=hashed.torrent.info_hash_v2,
                piece_length=hashed.torrent.piece_length,
                torrent=hashed.torrent.metainfo,
            )
        )
    return hashed.torrent.metainfo


async def test_package_seeded_by_the_seeder_reaches_the_client_through_the_swarm(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The real seeder syncs the repository, seeds its large packages and publishes them;
    with the upstream (the web seed) down, every byte comes from the seeder."""
    config = SeederConfig(
        repositories=(f"test={debrepo.base_url};suites={debrepo.suite}",),
        keyring=debrepo.keyring,
        data_dir=tmp_path / "seeder",
        grpc_bind="127.0.0.1:0",
        http_host="127.0.0.1",
        http_port=0,
        listen_host="127.0.0.1",
        listen_port=0,
        tracker_grpc=tracker.grpc_target,
        tracker_announce=(tracker.announce_url,),
        publish_token=TOKEN,
        log_format="console",
    )
    seeder = await seeder_app.start(config, poll=False)
    try:
        await seeder.box.sync()
        pkg = debrepo.package("aptmesh-huge")
        edge = await swarm_edge(make_edge, tracker, "zone-a")
        await fetch_indexes(client, edge, debrepo)
        debrepo.server.stop()
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
        assert metric(edge, "aptmesh_edge_served_bytes_total", source="swarm") == pkg.size
        assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", reason="no_torrent") == 0
        assert edge.blobs.get(pkg.sha256) is not None
    finally:
        if seeder.seeder.swarm is not None:
            seeder.seeder.swarm.apply(stop_tracker_timeout=0)
        await seeder.stop(0)


async def test_swarm_bytes_reach_the_client_before_the_download_ends(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    """No peer holds the file, so after the web-seed delay libtorrent gets its pieces from the
    upstream as web seed (slowed down here); the client gets verified pieces while the rest is
    on its way, and every byte counts as the upstream's, none as the swarm's."""
    pkg = debrepo.package("aptmesh-huge")
    await publish(tracker, pkg.path)
    edge = await swarm_edge(make_edge, tracker, "zone-a", swarm_webseed_delay=0.2)
    await fetch_indexes(client, edge, debrepo)
    debrepo.server.rate_limit = 2 << 20
    resource_key = f"http_deb.example.org_80/debian/{pkg.filename}"
    indexes = metric(edge, "aptmesh_edge_served_bytes_total", source="upstream")
    async with client.get(prefix_url(edge, pkg.filename)) as resp:
        assert resp.status == 200
        head = await resp.content.readexactly(64 * 1024)
        download = edge.files.packages.in_flight(resource_key)
        assert download is not None and download.source is SourceKind.SWARM
        assert download.written < pkg.size
        assert edge.swarm_side is not None
        fetching = edge.swarm_side.downloading[pkg.sha256]
        assert not fetching.status().sequential_download  # rarest-first + deadline window
        rest = await resp.read()
    assert hashlib.sha256(head + rest).hexdigest() == pkg.sha256
    served_upstream = metric(edge, "aptmesh_edge_served_bytes_total", source="upstream")
    assert served_upstream - indexes == pkg.size
    assert metric(edge, "aptmesh_edge_served_bytes_total", source="swarm") == 0
    reason = {"reason": "webseed_no_peers"}
    assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", **reason) == 1
    await edge.files.wait_idle()
    edge.swarm_side.update_metrics()
    kind = {"service": "edge", "direction": "download"}
    assert metric(edge, "aptmesh_torrent_payload_bytes_total", **kind) == 0


async def test_with_a_seed_and_the_mirror_up_the_mirror_sends_nothing(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The web seed is a fallback: while a seed keeps up, the upstream is not asked for the
    file at all, and every byte is the swarm's."""
    pkg = debrepo.package("aptmesh-huge")
    metainfo = await publish(tracker, pkg.path)
    seedbox = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder"))
    try:
        seedbox.add(metainfo, pkg.path.parent, seed=True, trackers=[tracker.announce_url])
        edge = await swarm_edge(make_edge, tracker, "zone-a")
        await fetch_indexes(client, edge, debrepo)
        debrepo.server.reset_counters()
        indexes = metric(edge, "aptmesh_edge_served_bytes_total", source="upstream")
        status, body, _ = await get(client, prefix_url(edge, pkg.filename))
        assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    finally:
        seedbox.apply(stop_tracker_timeout=0)  # the tracker shares this loop
        seedbox.close()
    assert debrepo.server.requests(pkg.filename) == 0
    assert metric(edge, "aptmesh_edge_served_bytes_total", source="swarm") == pkg.size
    assert metric(edge, "aptmesh_edge_served_bytes_total", source="upstream") == indexes
    for reason in ("webseed_no_peers", "webseed_no_seed", "webseed_stalled", "webseed_slow"):
        assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", reason=reason) == 0


async def test_stalled_swarm_falls_back_to_upstream_where_it_stopped(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The only peer holds the first half of the file and the web seed is down: the swarm
    stalls mid-file, and the upstream (back by then) resumes at the first missing byte."""
    pkg = debrepo.package("aptmesh-huge")
    metainfo = await publish(tracker, pkg.path)
    piece_length = parse_torrent(metainfo).piece_length
    half = tmp_path / "half"
    half.mkdir()
    held = (pkg.size // piece_length // 2) * piece_length
    (half / pkg.path.name).write_bytes(pkg.path.read_bytes()[:held])
    seedbox = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder"))
    try:
        seedbox.add(metainfo, half, trackers=[tracker.announce_url])
        edge = await make_edge(
            tracker_grpc=tracker.grpc_target,
            tracker_announce=tracker.announce_url,
            publish_token=TOKEN,
            swarm_timeout=5.0,
            swarm_stall_seconds=0.5,
        )
        await fetch_indexes(client, edge, debrepo)
        debrepo.server.stop()  # libtorrent finds the web seed down and leaves it for 30 s
        async with client.get(prefix_url(edge, pkg.filename)) as resp:
            assert resp.status == 200
            head = await resp.content.readexactly(piece_length)
            debrepo.server.start()
            rest = await resp.read()
    finally:
        seedbox.apply(stop_tracker_timeout=0)  # the tracker shares this loop
        seedbox.close()
    assert hashlib.sha256(head + rest).hexdigest() == pkg.sha256
    assert metric(edge, "aptmesh_edge_upstream_fallbacks_total", reason="swarm_stalled") == 1
    (resumed,) = [r for r in debrepo.server.log if r.path == pkg.filename]
    assert resumed.status == 206 and resumed.range is not None
    first_byte = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert first_byte == held
    assert edge.blobs.get(pkg.sha256) is not None
