"""The HTTP tracker over real sockets: announce, scrape, bad input, metrics."""

from __future__ import annotations

import asyncio
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import aiohttp
import pytest

from aptmesh.testing import FakeClock
from aptmesh.torrent import make_torrent
from aptmesh_tracker import app, wire
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import PackageRecord
from aptmesh_tracker.wire import AnnounceRequest, ScrapeRequest
from tests.tracker.conftest import get_bytes, make_config, make_file, record_of


@pytest.fixture
async def published(client: TrackerClient, tmp_path: Path) -> PackageRecord:
    record = record_of(make_torrent(make_file(tmp_path, "hello_2.10-3_amd64.deb", 200_000)))
    await client.publish(record)
    return record


def announce_url(tracker: RunningTracker, request: AnnounceRequest) -> str:
    return tracker.announce_url + "?" + wire.encode_announce_request(request)


async def announce(
    http: aiohttp.ClientSession, tracker: RunningTracker, request: AnnounceRequest
) -> wire.AnnounceResponse:
    return wire.decode_announce_response(await get_bytes(http, announce_url(tracker, request)))


async def scrape(
    http: aiohttp.ClientSession, tracker: RunningTracker, *hashes: bytes
) -> dict[bytes, wire.ScrapeStats]:
    url = tracker.http_url + "/scrape?" + wire.encode_scrape_request(ScrapeRequest(hashes))
    return dict(wire.decode_scrape_response(await get_bytes(http, url)).files)


async def test_peers_find_each_other_in_two_swarms_and_scrape_counts(
    tracker: RunningTracker, http: aiohttp.ClientSession, published: PackageRecord, clock: FakeClock
) -> None:
    v1, v2 = published.tracker_hashes()
    seed = AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="started")
    leech = AnnounceRequest(v1, b"L" * 20, 7002, left=100, event="started")
    first = await announce(http, tracker, seed)
    assert (first.interval, first.min_interval, first.peers) == (30, 5, ())
    second = await announce(http, tracker, leech)
    assert [wire.split_address(p.address) for p in second.peers] == [("127.0.0.1", 7001)]
    assert (second.complete, second.incomplete) == (1, 1)
    # the truncated v2 infohash is its own swarm
    alone = await announce(http, tracker, AnnounceRequest(v2, b"V" * 20, 7003, left=5))
    assert alone.peers == () and (alone.complete, alone.incomplete) == (0, 1)
    done = AnnounceRequest(v1, b"L" * 20, 7002, left=0, event="completed", compact=False)
    response = await announce(http, tracker, done)
    assert response.peers == ()  # seeders are not sent to seeders
    stats = await scrape(http, tracker, v1, v2, b"u" * 20)
    assert stats == {v1: wire.ScrapeStats(2, 0, 1), v2: wire.ScrapeStats(0, 1, 0)}
    await announce(http, tracker, AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="stopped"))
    clock.advance(61)  # the v2 peer and the completed leech stop announcing
    await tracker.maintain()
    assert await scrape(http, tracker, v1, v2) == {
        v1: wire.ScrapeStats(0, 0, 1),  # the swarm is gone, its completed count is not
        v2: wire.ScrapeStats(0, 0, 0),
    }


async def test_completed_count_outlives_its_swarm(
    tracker: RunningTracker, http: aiohttp.ClientSession, published: PackageRecord, clock: FakeClock
) -> None:
    v1 = published.tracker_hashes()[0]
    await announce(http, tracker, AnnounceRequest(v1, b"A" * 20, 7001, left=9, event="started"))
    await announce(http, tracker, AnnounceRequest(v1, b"A" * 20, 7001, left=0, event="completed"))
    await announce(http, tracker, AnnounceRequest(v1, b"A" * 20, 7001, left=0, event="stopped"))
    assert tracker.peers.swarm_count() == 0 and tracker.peers.peer_counts() == (0, 0)
    assert await scrape(http, tracker, v1) == {v1: wire.ScrapeStats(0, 0, 1)}
    # a second peer completes, then goes silent until it expires
    await announce(http, tracker, AnnounceRequest(v1, b"B" * 20, 7002, left=9, event="started"))
    assert await scrape(http, tracker, v1) == {v1: wire.ScrapeStats(0, 1, 1)}
    await announce(http, tracker, AnnounceRequest(v1, b"B" * 20, 7002, left=0, event="completed"))
    clock.advance(61)
    await tracker.maintain()
    assert tracker.peers.swarm_count() == 0
    assert await scrape(http, tracker, v1) == {v1: wire.ScrapeStats(0, 0, 2)}


async def test_completed_counts_only_for_torrents_tracked_here(
    tracker: RunningTracker, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    junk = b"j" * 20
    done = AnnounceRequest(junk, b"p" * 20, 7001, left=0, event="completed")
    with pytest.raises(wire.TrackerFailure, match="not tracked here"):
        await announce(http, tracker, done)
    assert await scrape(http, tracker, junk) == {}
    assert tracker.peers.scrape(junk) == wire.ScrapeStats(0, 0, 0)
    # an open tracker counts any infohash (in a capped table: see test_peerstore)
    open_tracker = await app.start(
        make_config(tmp_path / "open", open_tracker=True), maintain_every=0
    )
    try:
        await announce(http, open_tracker, done)
        await announce(
            http, open_tracker, AnnounceRequest(junk, b"p" * 20, 7001, left=0, event="stopped")
        )
        assert open_tracker.peers.swarm_count() == 0
        assert await scrape(http, open_tracker, junk) == {junk: wire.ScrapeStats(0, 0, 1)}
    finally:
        await open_tracker.stop(grace=0)


async def test_untracked_torrents_are_refused_unless_open(
    tracker: RunningTracker, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    request = AnnounceRequest(b"x" * 20, b"p" * 20, 7001, left=1)
    with pytest.raises(wire.TrackerFailure, match="not tracked here"):
        await announce(http, tracker, request)
    open_tracker = await app.start(
        make_config(tmp_path / "open", open_tracker=True), maintain_every=0
    )
    try:
        assert (await announce(http, open_tracker, request)).incomplete == 1
    finally:
        await open_tracker.stop(grace=0)


async def test_numwant_is_bounded(
    tracker: RunningTracker, http: aiohttp.ClientSession, published: PackageRecord
) -> None:
    v1 = published.tracker_hashes()[0]
    for n in range(tracker.config.numwant_max + 20):
        tracker.peers.announce(
            v1,
            wire.Peer(b"%020d" % n, wire.compact_address(f"10.1.{n // 250}.{n % 250}", 1000 + n)),
            seeder=False,
            event="started",
            numwant=0,
        )
    absurd = (
        announce_url(tracker, AnnounceRequest(v1, b"Q" * 20, 9, left=1)) + "&numwant=" + "9" * 50
    )
    got = wire.decode_announce_response(await get_bytes(http, absurd))
    assert len(got.peers) == tracker.config.numwant_max
    default = await announce(http, tracker, AnnounceRequest(v1, b"R" * 20, 9, left=1))
    assert len(default.peers) == tracker.config.numwant_default


BAD_QUERIES = [
    ("info_hash=%41&peer_id=" + "a" * 20 + "&port=1&left=0", "info_hash must be 20 bytes"),
    ("info_hash=" + "a" * 20 + "&peer_id=%ff%fe&port=1&left=0", "peer_id must be 20 bytes"),
    ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=70000&left=0", "port must be"),
    ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=lots", "left must be"),
    ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=0&numwant=x", "numwant"),
    ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=0&uploaded=1.5", "uploaded"),
    ("q=" + "z" * 4000, "request too large"),
    ("info_hash=" + "%00" * 20, "peer_id is missing"),
]


async def test_bad_requests_get_a_failure_reason_and_the_tracker_keeps_serving(
    tracker: RunningTracker, http: aiohttp.ClientSession, published: PackageRecord
) -> None:
    for query, reason in BAD_QUERIES:
        body = await get_bytes(http, tracker.announce_url + "?" + query)
        with pytest.raises(wire.TrackerFailure, match=reason):
            wire.decode_announce_response(body)
    body = await get_bytes(http, tracker.http_url + "/scrape")
    with pytest.raises(wire.TrackerFailure, match="at least one info_hash"):
        wire.decode_scrape_response(body)
    # Past aiohttp's own limits: a huge request line and a body on a GET.
    host, port = "127.0.0.1", tracker.site.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /announce?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)  # answered, then closed
    assert raw.startswith(b"HTTP/1.0 200") or raw.startswith(b"HTTP/1.1 200"), raw[:100]
    assert b"d14:failure reason" in raw  # a BitTorrent client can read why
    writer.close()
    async with http.post(tracker.announce_url, data=b"x" * 100_000) as response:
        assert response.status in (405, 413)
    # Half a request, then silence: the server must still answer others meanwhile.
    _, idle = await asyncio.open_connection(host, port)
    idle.write(b"GET /announce?info_hash=")
    await idle.drain()
    ok = await announce(
        http, tracker, AnnounceRequest(published.tracker_hashes()[0], b"K" * 20, 1, left=0)
    )
    assert ok.complete == 1
    idle.close()
    metrics = (await get_bytes(http, tracker.http_url + "/metrics")).decode()
    assert 'aptmesh_tracker_bad_requests_total{reason="too_large"} 1.0' in metrics
    assert 'aptmesh_tracker_bad_requests_total{reason="number"} 3.0' in metrics


async def test_live_metrics_pass_promtool(
    tracker: RunningTracker,
    http: aiohttp.ClientSession,
    published: PackageRecord,
    client: TrackerClient,
) -> None:
    v1 = published.tracker_hashes()[0]
    await announce(http, tracker, AnnounceRequest(v1, b"M" * 20, 5, left=0, event="started"))
    await client.get(published.sha256)
    body = await get_bytes(http, tracker.http_url + "/metrics")
    text = body.decode()
    for line in (
        'aptmesh_tracker_announces_total{event="started"} 1.0',
        "aptmesh_tracker_swarms 1.0",
        'aptmesh_tracker_peers{role="seeder"} 1.0',
        "aptmesh_tracker_index_records 1.0",
        "aptmesh_tracker_edges 0.0",
        'grpc_server_handled_total{grpc_code="OK",grpc_method="GetPackage"',
    ):
        assert line in text, line
    promtool = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(promtool.communicate(body), timeout=30)
    assert promtool.returncode == 0, output.decode()
    assert await get_bytes(http, tracker.http_url + "/healthz") == b"ok\n"


def test_peers6_for_ipv6_clients(tmp_path: Path) -> None:
    """The logic hands IPv6 peers out in `peers6` (no IPv6 socket needed to prove it)."""
    from aptmesh.metrics import new_registry
    from aptmesh_tracker.metrics import TrackerMetrics
    from aptmesh_tracker.peerstore import MemoryPeerStore
    from aptmesh_tracker.stores import memory_stores
    from aptmesh_tracker.tracker import Policy, Tracker

    peers = MemoryPeerStore(60, FakeClock())
    store = memory_stores()
    logic = Tracker(
        peers, None, Policy(30, 5, 50, 200), TrackerMetrics(new_registry("t"), peers, store)
    )
    logic.announce(AnnounceRequest(b"h" * 20, b"a" * 20, 6881, left=0), "2001:db8::1")
    logic.announce(AnnounceRequest(b"h" * 20, b"b" * 20, 6882, left=0), "192.0.2.1")
    body = wire.encode_announce(
        logic.announce(AnnounceRequest(b"h" * 20, b"c" * 20, 1, left=9), "::1")
    )
    got = wire.decode_announce_response(body)
    assert sorted(wire.split_address(p.address) for p in got.peers) == [
        ("192.0.2.1", 6882),
        ("2001:db8::1", 6881),
    ]
    assert b"6:peers618:" in body
