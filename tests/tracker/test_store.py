"""The storage contract, run against every implementation; SQLite's durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aptmesh.testing import FakeClock
from aptmesh.torrent import make_torrent
from aptmesh_tracker.records import Edge, PackageRecord
from aptmesh_tracker.store import MemoryStore, SqliteStore, Store, summed_uplink
from tests.tracker.conftest import make_file, record_of

Factory = Callable[[FakeClock], Store]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[Store] = []

    def factory(clock: FakeClock) -> Store:
        store: Store = (
            MemoryStore(clock)
            if request.param == "memory"
            else SqliteStore(tmp_path / "s.db", clock)
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[PackageRecord]:
    directory = tmp_path_factory.mktemp("files")
    return [
        record_of(make_torrent(make_file(directory, f"p{i}_1.0_amd64.deb", 70_000 + i, seed=i)))
        for i in range(3)
    ]


def test_put_get_and_allow_list(new_store: Factory, records: list[PackageRecord]) -> None:
    store = new_store(FakeClock())
    first = records[0]
    assert store.get(first.sha256) is None
    assert store.put(first) is True
    assert store.put(first) is False
    assert store.get(first.sha256) == first
    v1, v2 = first.tracker_hashes()
    assert store.is_tracked(v1) and store.is_tracked(v2)
    assert not store.is_tracked(bytes.fromhex(first.info_hash_v2)[20:40])
    assert store.record_count() == 1


def test_urls_merge_for_the_same_torrent(new_store: Factory, records: list[PackageRecord]) -> None:
    store = new_store(FakeClock())
    base = records[0]
    a = PackageRecord(**{**base.__dict__, "upstream_urls": ("http://a/x.deb",)})
    b = PackageRecord(**{**base.__dict__, "upstream_urls": ("http://b/x.deb", "http://a/x.deb")})
    store.put(a)
    assert store.put(b) is False
    got = store.get(base.sha256)
    assert got is not None and got.upstream_urls == ("http://a/x.deb", "http://b/x.deb")


def test_batch_lookup(new_store: Factory, records: list[PackageRecord]) -> None:
    store = new_store(FakeClock())
    for record in records[:2]:
        store.put(record)
    wanted = [r.sha256 for r in records] + ["0" * 64]
    assert store.get_many(wanted) == {r.sha256: r for r in records[:2]}
    assert store.get_many([]) == {}


def test_edge_leases_and_zone_order(new_store: Factory) -> None:
    clock = FakeClock()
    store = new_store(clock)
    store.register_edge(Edge("b", "http://b:3142", "west"), 60)
    store.register_edge(Edge("a", "http://a:3142", "east"), 60)
    clock.advance(30)
    store.register_edge(Edge("c", "http://c:3142", "west"), 60)
    assert [e.id for e in store.live_edges("west")] == ["b", "c", "a"]
    assert [e.id for e in store.live_edges("east")] == ["a", "b", "c"]
    clock.advance(31)  # a and b ran out; c renewed at +30
    assert [e.id for e in store.live_edges("east")] == ["c"]
    assert store.edge_count() == 1
    assert store.expire_edges() == 2
    store.register_edge(Edge("c", "http://c2:3142", "west"), 60)  # renewal may move it
    assert store.live_edges("") == [Edge("c", "http://c2:3142", "west")]
    store.register_edge(Edge("c", "http://c2:3142", "west", upload_capacity=12_500_000), 60)
    assert store.live_edges("") == [Edge("c", "http://c2:3142", "west", 12_500_000)]


def test_seed_boxes_have_leases_but_are_never_listed_as_edges(new_store: Factory) -> None:
    clock = FakeClock()
    store = new_store(clock)
    store.register_edge(Edge("e", "http://e:3142", "z", 5_000_000), 60)
    assert store.seed_upload_capacity() == 0  # none live: unknown
    store.register_edge(Edge("s1", "", "z", 12_500_000, seed_box=True), 60)
    assert store.live_edges("z") == [Edge("e", "http://e:3142", "z", 5_000_000)]
    assert store.edge_count() == 1
    assert store.seed_upload_capacity() == 12_500_000
    clock.advance(30)
    store.register_edge(Edge("s2", "", "other", 2**63 - 1, seed_box=True), 60)
    assert store.seed_upload_capacity() == 12_500_000 + 2**63 - 1  # all zones
    store.register_edge(Edge("s3", "", "", 0, seed_box=True), 60)
    assert store.seed_upload_capacity() == 0  # one unknown: the sum would understate
    store.register_edge(Edge("s3", "", "", 1_000_000, seed_box=True), 60)  # renewal may change
    assert store.seed_upload_capacity() == 12_500_000 + 2**63 - 1 + 1_000_000
    clock.advance(31)  # e and s1 ran out; s2 and s3 registered at +30
    assert store.live_edges("z") == [] and store.edge_count() == 0
    assert store.seed_upload_capacity() == 2**63 - 1 + 1_000_000
    assert store.expire_edges() == 2
    clock.advance(30)
    assert store.seed_upload_capacity() == 0
    assert store.expire_edges() == 2


def test_summed_uplink() -> None:
    assert summed_uplink([]) == 0
    assert summed_uplink([3, 4]) == 7
    assert summed_uplink([3, 0, 4]) == 0


def test_sqlite_reopens_with_records_allow_list_and_leases(
    tmp_path: Path, records: list[PackageRecord]
) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "t.db", clock)
    store.put(records[0])
    store.register_edge(Edge("e", "http://e:3142", "z", upload_capacity=2**63 - 1), 60)
    store.register_edge(Edge("s", "", "z", upload_capacity=10_000_000, seed_box=True), 60)
    store.close()
    again = SqliteStore(tmp_path / "t.db", clock)
    assert again.get(records[0].sha256) == records[0]
    assert again.is_tracked(records[0].tracker_hashes()[1])
    assert again.record_count() == 1
    assert again.live_edges("z") == [Edge("e", "http://e:3142", "z", 2**63 - 1)]
    assert again.seed_upload_capacity() == 10_000_000
    again.close()
    clock.advance(61)  # a lease that ended while the tracker was down is not restored
    after = SqliteStore(tmp_path / "t.db", clock)
    assert after.live_edges("z") == [] and after.seed_upload_capacity() == 0
    after.close()


def _old_edges_table(path: Path, columns: str, row: tuple[object, ...]) -> None:
    """A database whose edges table has only `columns` after the first four, holding `row`."""
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE edges (id TEXT PRIMARY KEY, url TEXT NOT NULL, zone TEXT NOT NULL,"
        f" expires REAL NOT NULL{columns})"
    )
    marks = ", ".join("?" * len(row))
    old.execute(f"INSERT INTO edges VALUES ({marks})", row)  # noqa: S608 - placeholders only
    old.commit()
    old.close()


def test_sqlite_opens_a_database_made_before_edges_had_an_upload_capacity(tmp_path: Path) -> None:
    clock = FakeClock()
    _old_edges_table(tmp_path / "old.db", "", ("old", "http://old:3142", "z", clock() + 60))
    store = SqliteStore(tmp_path / "old.db", clock)
    assert store.live_edges("z") == [Edge("old", "http://old:3142", "z", upload_capacity=0)]
    store.register_edge(Edge("new", "http://new:3142", "z", upload_capacity=5_000_000), 60)
    store.close()
    again = SqliteStore(tmp_path / "old.db", clock)  # the column is there now: no second ALTER
    assert again.live_edges("z") == [
        Edge("new", "http://new:3142", "z", 5_000_000),
        Edge("old", "http://old:3142", "z", 0),
    ]
    again.close()


def test_sqlite_opens_a_database_made_before_seed_boxes(tmp_path: Path) -> None:
    clock = FakeClock()
    _old_edges_table(
        tmp_path / "old.db",
        ", upload_capacity INTEGER NOT NULL DEFAULT 0",
        ("old", "http://old:3142", "z", clock() + 60, 7_000_000),
    )
    store = SqliteStore(tmp_path / "old.db", clock)
    assert store.live_edges("z") == [Edge("old", "http://old:3142", "z", 7_000_000)]
    assert store.seed_upload_capacity() == 0
    store.register_edge(Edge("seed", "", "z", upload_capacity=5_000_000, seed_box=True), 60)
    store.close()
    again = SqliteStore(tmp_path / "old.db", clock)  # the column is there now: no second ALTER
    assert again.live_edges("z") == [Edge("old", "http://old:3142", "z", 7_000_000)]
    assert again.edge_count() == 1
    assert again.seed_upload_capacity() == 5_000_000
    again.close()


def test_torrent_of_pairs_a_hybrid_torrents_two_infohashes(
    new_store: Factory, records: list[PackageRecord]
) -> None:
    store = new_store(FakeClock())
    record = records[0]
    store.put(record)
    v1, v2 = record.tracker_hashes()
    assert store.torrent_of(v1) == store.torrent_of(v2) == record.sha256
    assert store.torrent_of(b"\x00" * 20) is None


def test_leases_list_edges_and_seed_boxes_with_their_ends(new_store: Factory) -> None:
    clock = FakeClock()
    store = new_store(clock)
    end = clock() + 60
    store.register_edge(Edge("s", "", "", 100, seed_box=True), 60)
    store.register_edge(Edge("e", "http://e:3142", "z"), 60)
    assert store.leases() == [
        (Edge("s", "", "", 100, seed_box=True), end),
        (Edge("e", "http://e:3142", "z"), end),
    ]
    clock.advance(61)
    assert store.leases() == []
