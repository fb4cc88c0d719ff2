"""The gRPC index and edge registry, through the real client against a real server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from aptmesh import bencode
from aptmesh.testing import FakeClock
from aptmesh.torrent import make_torrent
from aptmesh.v1 import index_pb2, index_pb2_grpc
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import (
    IndexUnavailable,
    NotFound,
    Rejected,
    TrackerClient,
)
from aptmesh_tracker.records import (
    MAX_GENERATIONS,
    MAX_SUITE_CHARS,
    Edge,
    PackageRecord,
    Site,
    SuiteGeneration,
)
from tests.tracker.conftest import make_file, record_of


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[PackageRecord]:
    directory = tmp_path_factory.mktemp("pool")
    return [
        record_of(
            make_torrent(make_file(directory, f"pkg{i}_1.0+b1~rc_amd64.deb", 100_000 * (i + 1), i)),
            (f"http://deb.example/debian/pool/main/p/pkg{i}_1.0+b1~rc_amd64.deb",),
        )
        for i in range(3)
    ]


async def test_publish_needs_the_token(
    tracker: RunningTracker, records: list[PackageRecord]
) -> None:
    for token in ("", "wrong"):
        async with TrackerClient(tracker.grpc_target, token=token) as anonymous:
            with pytest.raises(Rejected, match="bearer token") as caught:
                await anonymous.publish(records[0])
            assert caught.value.code == "UNAUTHENTICATED"
            with pytest.raises(Rejected, match="bearer token"):
                await anonymous.register_edge(Edge("e1", "http://e1:3142", "z"))
    assert tracker.stores.index.record_count() == 0


async def test_publish_then_lookups(client: TrackerClient, records: list[PackageRecord]) -> None:
    assert await client.publish(records[0]) is True
    assert await client.publish(records[0]) is False
    assert await client.publish(records[1]) is True
    assert await client.get(records[0].sha256) == records[0]
    assert await client.get(records[0].sha256.upper()) == records[0]
    with pytest.raises(NotFound, match="no package"):
        await client.get("ab" * 32)
    with pytest.raises(Rejected, match="64 lower-case hex") as caught:
        await client.get("nothex")
    assert caught.value.code == "INVALID_ARGUMENT"
    wanted = [r.sha256 for r in records] + [records[0].sha256]
    result = await client.get_many(wanted)
    assert result.records == {r.sha256: r for r in records[:2]}
    assert result.missing == (records[2].sha256,)


async def test_batches_are_capped(tracker: RunningTracker, records: list[PackageRecord]) -> None:
    async with grpc.aio.insecure_channel(tracker.grpc_target) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        too_many = [f"{i:064x}" for i in range(tracker.config.max_batch + 1)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchGetPackages(
                index_pb2.BatchGetPackagesRequest(sha256s=too_many), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 1000" in (caught.value.details() or "")
    # the client splits big lookups into allowed batches
    async with TrackerClient(tracker.grpc_target) as reader:
        assert len((await reader.get_many(too_many)).missing) == len(too_many)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 1}, "size 1 != torrent's"),
        ({"name": "other.deb"}, "name 'other.deb' != torrent's"),
        ({"piece_length": 16384}, "piece_length 16384 != torrent's 65536"),
        ({"info_hash_v1": "0" * 40}, "info_hash_v1"),
        ({"info_hash_v2": "0" * 64}, "info_hash_v2"),
        ({"sha256": "XYZ"}, "sha256 must be 64 lower-case hex"),
        ({"info_hash_v2": "0" * 40}, "full v2 hash"),
        ({"name": "../etc/passwd"}, "basename"),
        ({"torrent": b"not bencode"}, "torrent: torrent is not valid bencoding"),
        ({"upstream_urls": ("ftp://x/y",)}, "http:// or https://"),
    ],
)
async def test_records_that_disagree_are_refused(
    client: TrackerClient, records: list[PackageRecord], change: dict[str, object], message: str
) -> None:
    bad = dataclasses.replace(records[0], **change)  # type: ignore[arg-type]
    with pytest.raises(Rejected) as caught:
        await client.publish(bad)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert message in str(caught.value)


async def test_a_v1_only_torrent_is_refused(
    client: TrackerClient, records: list[PackageRecord]
) -> None:
    meta = bencode.decode(records[0].torrent)
    assert isinstance(meta, dict) and isinstance(meta[b"info"], dict)
    info = {k: v for k, v in meta[b"info"].items() if k not in (b"meta version", b"file tree")}
    v1_only = bencode.encode({b"info": info})
    with pytest.raises(Rejected, match="not hybrid"):
        await client.publish(dataclasses.replace(records[0], torrent=v1_only))


async def test_edges_register_list_and_expire(
    tracker: RunningTracker, client: TrackerClient, clock: FakeClock
) -> None:
    assert await client.register_edge(Edge("edge-a", "http://a.example:3142", "lab")) == 60
    await client.register_edge(Edge("edge-b", "http://b.example:3142", "office"))
    clock.advance(40)
    await client.register_edge(Edge("edge-b", "http://b.example:3142", "office"))  # renewal
    assert [e.id for e in await client.list_edges("office")] == ["edge-b", "edge-a"]
    assert [e.id for e in await client.list_edges("lab")] == ["edge-a", "edge-b"]
    clock.advance(30)  # edge-a's lease (60 s) is over; edge-b renewed at +40
    assert await client.list_edges("lab") == [Edge("edge-b", "http://b.example:3142", "office")]
    await tracker.maintain()
    clock.advance(31)
    assert await client.list_edges() == []
    with pytest.raises(Rejected, match="edge url"):
        await client.register_edge(Edge("edge-c", "javascript:alert(1)", ""))
    with pytest.raises(Rejected, match="edge id"):
        await client.register_edge(Edge("", "http://c:3142", ""))


async def test_edges_report_their_upload_capacity(
    tracker: RunningTracker, client: TrackerClient
) -> None:
    await client.register_edge(Edge("edge-a", "http://a.example:3142", "lab", 12_500_000))
    await client.register_edge(Edge("edge-b", "http://b.example:3142", "lab"))
    assert await client.list_edges("lab") == [
        Edge("edge-a", "http://a.example:3142", "lab", upload_capacity=12_500_000),
        Edge("edge-b", "http://b.example:3142", "lab", upload_capacity=0),
    ]
    # A uint64 the store cannot hold (SQLite's INTEGER is signed) is the caller's error.
    with pytest.raises(Rejected, match="upload_capacity") as caught:
        await client.register_edge(Edge("edge-c", "http://c.example:3142", "lab", 2**64 - 1))
    assert caught.value.code == "INVALID_ARGUMENT"
    assert [e.id for e in tracker.stores.registry.live_edges("lab")] == ["edge-a", "edge-b"]


async def test_seed_boxes_report_their_uplink_but_are_not_edges(
    tracker: RunningTracker, client: TrackerClient, clock: FakeClock
) -> None:
    edge = Edge("edge-a", "http://a.example:3142", "lab", 2_000_000)
    await client.register_edge(edge)
    assert await client.list_site("lab") == Site([edge], seed_upload_capacity=0)
    assert await client.register_edge(Edge("seed-1", "", "lab", 10_000_000, seed_box=True)) == 60
    assert await client.list_site("lab") == Site([edge], seed_upload_capacity=10_000_000)
    assert await client.list_edges() == [edge]
    assert tracker.stores.registry.edge_count() == 1  # the aptmesh_tracker_edges gauge
    assert tracker.registry.get_sample_value("aptmesh_tracker_edges") == 1

    clock.advance(40)
    await client.register_edge(Edge("seed-2", "", "dc", 2_500_000, seed_box=True))
    assert (await client.list_site("lab")).seed_upload_capacity == 12_500_000  # all zones
    await client.register_edge(Edge("seed-3", "http://s3.example", "dc", 0, seed_box=True))
    assert (await client.list_site()).seed_upload_capacity == 0  # one unknown: 0
    await client.register_edge(Edge("seed-3", "http://s3.example", "dc", 1, seed_box=True))
    assert (await client.list_site()).seed_upload_capacity == 12_500_001

    clock.advance(30)  # edge-a's and seed-1's leases (60 s) are over; the others renewed at +40
    assert await client.list_site() == Site([], seed_upload_capacity=2_500_001)
    await tracker.maintain()
    clock.advance(31)
    assert await client.list_site() == Site([], seed_upload_capacity=0)


async def test_a_seed_box_may_have_no_url_an_edge_may_not(
    tracker: RunningTracker, client: TrackerClient
) -> None:
    await client.register_edge(Edge("seed-1", "", "", 10_000_000, seed_box=True))
    with pytest.raises(Rejected, match="edge url") as caught:
        await client.register_edge(Edge("edge-a", "", ""))
    assert caught.value.code == "INVALID_ARGUMENT"
    with pytest.raises(Rejected, match="seed box url"):
        await client.register_edge(Edge("seed-2", "javascript:alert(1)", "", seed_box=True))
    with pytest.raises(Rejected, match="seed box id"):
        await client.register_edge(Edge("-seed", "", "", seed_box=True))
    with pytest.raises(Rejected, match="seed box zone"):
        await client.register_edge(Edge("seed-3", "", "a zone", seed_box=True))
    with pytest.raises(Rejected, match="seed box upload_capacity"):
        await client.register_edge(Edge("seed-4", "", "", 2**63, seed_box=True))
    async with TrackerClient(tracker.grpc_target) as anonymous:
        with pytest.raises(Rejected, match="registering a seed box needs a valid bearer token"):
            await anonymous.register_edge(Edge("seed-5", "", "", seed_box=True))
    assert await client.list_site() == Site([], seed_upload_capacity=10_000_000)


async def test_seed_box_uplinks_beyond_uint64_are_capped(client: TrackerClient) -> None:
    for number in range(3):
        await client.register_edge(Edge(f"seed-{number}", "", "", 2**63 - 1, seed_box=True))
    assert (await client.list_site()).seed_upload_capacity == 2**64 - 1


async def test_unreachable_tracker_is_retryable() -> None:
    async with TrackerClient("127.0.0.1:1", timeout=0.5) as nowhere:
        with pytest.raises(IndexUnavailable):
            await nowhere.get("ab" * 32)


async def test_a_restart_keeps_the_index(tmp_path: Path, records: list[PackageRecord]) -> None:
    from aptmesh_tracker import app
    from tests.tracker.conftest import TOKEN, make_config

    config = make_config(tmp_path)
    for round_ in range(2):
        running = await app.start(config, maintain_every=0)
        try:
            async with TrackerClient(running.grpc_target, token=TOKEN) as c:
                if round_ == 0:
                    await c.publish(records[2])
                else:
                    assert await c.get(records[2].sha256) == records[2]
                    assert running.stores.index.is_tracked(records[2].tracker_hashes()[0])
        finally:
            await running.stop(grace=0)


async def test_edges_report_their_generations_within_bounds(
    tracker: RunningTracker, client: TrackerClient
) -> None:
    suite = "http_deb.example.org_80/debian/dists/stable"
    one = SuiteGeneration(suite, 1_700_000_000, "0123456789abcdef", 1_700_000_100)
    await client.register_edge(Edge("edge-a", "http://a.example:3142", "lab", generations=(one,)))
    (listed,) = await client.list_edges("lab")
    assert listed.generations == (one,)
    many = tuple(SuiteGeneration(f"{suite}-{n}", 1, "0" * 16) for n in range(MAX_GENERATIONS + 1))
    bad = {
        "more than": many,
        "16 lower-case hex": (dataclasses.replace(one, hash="0123456789ABCDEF"),),
        "printable": (dataclasses.replace(one, suite="a\nb"),),
        "1-512": (dataclasses.replace(one, suite="x" * (MAX_SUITE_CHARS + 1)),),
        "twice": (one, one),
        "epoch seconds": (dataclasses.replace(one, date=2**41),),
    }
    for message, generations in bad.items():
        with pytest.raises(Rejected, match=message):
            await client.register_edge(
                Edge("edge-b", "http://b.example:3142", "lab", generations=generations)
            )
    assert [e.id for e in await client.list_edges("lab")] == ["edge-a"]
