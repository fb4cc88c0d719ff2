"""The index's contract, run against every backend (the `open_backend` fixture); SQLite's
durability and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aptmesh.testing import FakeClock
from aptmesh.torrent import make_torrent
from aptmesh_tracker.records import Edge, PackageRecord
from aptmesh_tracker.stores import open_stores
from tests.tracker.conftest import Backends, make_file, record_of


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[PackageRecord]:
    directory = tmp_path_factory.mktemp("files")
    return [
        record_of(make_torrent(make_file(directory, f"p{i}_1.0_amd64.deb", 70_000 + i, seed=i)))
        for i in range(3)
    ]


def test_put_get_and_allow_list(open_backend: Backends, records: list[PackageRecord]) -> None:
    store = open_backend(FakeClock()).index
    first = records[0]
    assert store.get(first.sha256) is None
    assert store.put(first) is True
    assert store.put(first) is False
    assert store.get(first.sha256) == first
    v1, v2 = first.tracker_hashes()
    assert store.is_tracked(v1) and store.is_tracked(v2)
    assert not store.is_tracked(bytes.fromhex(first.info_hash_v2)[20:40])
    assert store.record_count() == 1


def test_urls_merge_for_the_same_torrent(
    open_backend: Backends, records: list[PackageRecord]
) -> None:
    store = open_backend(FakeClock()).index
    base = records[0]
    a = PackageRecord(**{**base.__dict__, "upstream_urls": ("http://a/x.deb",)})
    b = PackageRecord(**{**base.__dict__, "upstream_urls": ("http://b/x.deb", "http://a/x.deb")})
    store.put(a)
    assert store.put(b) is False
    got = store.get(base.sha256)
    assert got is not None and got.upstream_urls == ("http://a/x.deb", "http://b/x.deb")


def test_batch_lookup(open_backend: Backends, records: list[PackageRecord]) -> None:
    store = open_backend(FakeClock()).index
    for record in records[:2]:
        store.put(record)
    wanted = [r.sha256 for r in records] + ["0" * 64]
    assert store.get_many(wanted) == {r.sha256: r for r in records[:2]}
    assert store.get_many([]) == {}


def test_sqlite_reopens_with_records_allow_list_and_leases(
    tmp_path: Path, records: list[PackageRecord]
) -> None:
    clock = FakeClock()
    store = open_stores("", tmp_path / "t.db", clock)
    store.index.put(records[0])
    store.registry.register(Edge("e", "http://e:3142", "z", upload_capacity=2**63 - 1), 60)
    store.registry.register(Edge("s", "", "z", upload_capacity=10_000_000, seed_box=True), 60)
    store.close()
    again = open_stores("", tmp_path / "t.db", clock)
    assert again.index.get(records[0].sha256) == records[0]
    assert again.index.is_tracked(records[0].tracker_hashes()[1])
    assert again.index.record_count() == 1
    assert again.registry.live_edges("z") == [Edge("e", "http://e:3142", "z", 2**63 - 1)]
    assert again.registry.seed_upload_capacity() == 10_000_000
    again.close()
    clock.advance(61)  # a lease that ended while the tracker was down is not restored
    after = open_stores("", tmp_path / "t.db", clock)
    assert after.registry.live_edges("z") == [] and after.registry.seed_upload_capacity() == 0
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
    store = open_stores("", tmp_path / "old.db", clock)
    assert store.registry.live_edges("z") == [
        Edge("old", "http://old:3142", "z", upload_capacity=0)
    ]
    store.registry.register(Edge("new", "http://new:3142", "z", upload_capacity=5_000_000), 60)
    store.close()
    again = open_stores("", tmp_path / "old.db", clock)  # the column is there now: no second ALTER
    assert again.registry.live_edges("z") == [
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
    store = open_stores("", tmp_path / "old.db", clock)
    assert store.registry.live_edges("z") == [Edge("old", "http://old:3142", "z", 7_000_000)]
    assert store.registry.seed_upload_capacity() == 0
    store.registry.register(Edge("seed", "", "z", upload_capacity=5_000_000, seed_box=True), 60)
    store.close()
    again = open_stores("", tmp_path / "old.db", clock)  # the column is there now: no second ALTER
    assert again.registry.live_edges("z") == [Edge("old", "http://old:3142", "z", 7_000_000)]
    assert again.registry.edge_count() == 1
    assert again.registry.seed_upload_capacity() == 5_000_000
    again.close()


def test_torrent_of_pairs_a_hybrid_torrents_two_infohashes(
    open_backend: Backends, records: list[PackageRecord]
) -> None:
    store = open_backend(FakeClock()).index
    record = records[0]
    store.put(record)
    v1, v2 = record.tracker_hashes()
    assert store.torrent_of(v1) == store.torrent_of(v2) == record.sha256
    assert store.torrent_of(b"\x00" * 20) is None
