"""PostgreSQL as the shared store: migrations, replicas sharing it, an unreachable server."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from aptmesh.testing import FakeClock
from aptmesh.torrent import make_torrent
from aptmesh_tracker import postgres_store
from aptmesh_tracker.index_store import StoreError, StoreUnavailable
from aptmesh_tracker.records import Edge, PackageRecord
from aptmesh_tracker.stores import migrate, open_stores
from tests.fixtures.datastores import PostgresServer
from tests.tracker.conftest import make_file, record_of


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[PackageRecord]:
    directory = tmp_path_factory.mktemp("files")
    return [
        record_of(make_torrent(make_file(directory, f"q{i}_1.0_amd64.deb", 70_000 + i, seed=i)))
        for i in range(3)
    ]


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM aptmesh_schema_versions ORDER BY version")
        return [row[0] for row in rows]


def test_replicas_starting_at_once_migrate_once(postgres_url: str, tmp_path: Path) -> None:
    results: list[object] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        try:
            results.append(migrate(postgres_url, tmp_path / "unused.db"))
        except Exception as exc:  # a failure must show in the assertion, not vanish
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    latest = len(postgres_store.MIGRATIONS)
    assert results == [latest] * 6
    assert versions(postgres_url) == list(range(1, latest + 1))
    assert migrate(postgres_url, tmp_path / "unused.db") == latest  # idempotent


def test_a_database_newer_than_the_code_is_refused(postgres_url: str, tmp_path: Path) -> None:
    migrate(postgres_url, tmp_path / "unused.db")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO aptmesh_schema_versions (version) VALUES (999)")
    with pytest.raises(StoreError, match="schema version 999, newer than"):
        open_stores(postgres_url, tmp_path / "unused.db")


def test_a_bad_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="tracker database"):
        open_stores("postgresql://nobody@127.0.0.1:1/none", tmp_path / "unused.db")


def test_two_replicas_share_the_index_and_the_registry(
    postgres_url: str, tmp_path: Path, records: list[PackageRecord]
) -> None:
    clock = FakeClock()
    one = open_stores(postgres_url, tmp_path / "unused.db", clock)
    two = open_stores(postgres_url, tmp_path / "unused.db", clock)
    try:
        assert one.index.put(records[0]) is True
        assert two.index.get(records[0].sha256) == records[0]
        v1, v2 = records[0].tracker_hashes()
        assert not two.index.is_tracked(v1)  # a cache: it catches up in refresh()
        two.index.refresh()
        assert two.index.is_tracked(v1) and two.index.is_tracked(v2)
        assert two.index.record_count() == 1
        # the same file published through both: one record, the URLs merged
        a = PackageRecord(**{**records[1].__dict__, "upstream_urls": ("http://a/x.deb",)})
        b = PackageRecord(**{**records[1].__dict__, "upstream_urls": ("http://b/x.deb",)})
        assert one.index.put(a) is True
        assert two.index.put(b) is False
        got = one.index.get(records[1].sha256)
        assert got is not None and got.upstream_urls == ("http://a/x.deb", "http://b/x.deb")
        # a lease taken through one replica is live in the other, and expires there
        one.registry.register(Edge("e1", "http://e1:3142", "z", address="10.1.1.1"), 60)
        assert not two.registry.is_registered_address("10.1.1.1")  # a view: refresh() reads
        two.registry.refresh()
        assert two.registry.is_registered_address("10.1.1.1")
        assert two.registry.live_edges("z") == [
            Edge("e1", "http://e1:3142", "z", address="10.1.1.1")
        ]
        assert two.registry.edge_count() == 1
        clock.advance(61)
        assert two.registry.expire() == 1
        assert one.registry.live_edges("z") == []
    finally:
        one.close()
        two.close()


def test_an_unreachable_server_is_unavailable_and_the_store_recovers(
    own_postgres: PostgresServer, tmp_path: Path, records: list[PackageRecord]
) -> None:
    stores = open_stores(own_postgres.url(), tmp_path / "unused.db", FakeClock())
    try:
        stores.index.put(records[0])
        own_postgres.stop("immediate")
        with pytest.raises(StoreUnavailable, match="PostgreSQL is unreachable"):
            stores.index.put(records[1])
        with pytest.raises(StoreUnavailable):
            stores.registry.register(Edge("e", "http://e:3142"), 60)
        with pytest.raises(StoreUnavailable):
            stores.index.refresh()
        assert stores.index.is_tracked(records[0].tracker_hashes()[0])  # the cache answers
        own_postgres.start()
        assert stores.index.put(records[1]) is True  # no reopen: the pool reconnects
        assert stores.index.get(records[0].sha256) == records[0]
    finally:
        stores.close()


def test_migrate_command_and_masked_print_config(postgres_url: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "APTMESH_TRACKER_STORE": postgres_url}
    shown = subprocess.run(
        [sys.executable, "-m", "aptmesh_cli", "tracker", "--print-config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "fixture-password" not in shown
    assert "APTMESH_TRACKER_STORE=postgresql://aptmesh:***@127.0.0.1:" in shown
    done = subprocess.run(
        [sys.executable, "-m", "aptmesh_cli", "tracker", "migrate", "--log-format", "console"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "store_migrated" in done.stderr
    assert versions(postgres_url) == list(range(1, len(postgres_store.MIGRATIONS) + 1))
    bad = subprocess.run(
        [sys.executable, "-m", "aptmesh_cli", "tracker", "--store", "mysql://x"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--store / APTMESH_TRACKER_STORE" in bad.stderr and "postgresql://" in bad.stderr
