"""Fixtures for the tracker's tests: a fake clock, a running tracker, published torrents, and
`open_backend`: every backend of the index and the registry, as one fixture the conformance
suites run on (adding a backend is one line in `BACKENDS`)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from aptmesh.testing import FakeClock
from aptmesh.torrent import HashedFile
from aptmesh_tracker import app
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.config import TrackerConfig
from aptmesh_tracker.records import PackageRecord
from aptmesh_tracker.stores import Backend, Stores, memory_stores, open_stores
from tests.fixtures.datastores import PostgresServer

TOKEN = "test-publish-token"


def make_config(tmp_path: Path, **overrides: object) -> TrackerConfig:
    values: dict[str, object] = {
        "grpc_bind": "127.0.0.1:0",
        "http_host": "127.0.0.1",
        "http_port": 0,
        "db_path": tmp_path / "tracker.sqlite3",
        "publish_token": TOKEN,
        "announce_interval": 30,
        "min_interval": 5,
        "peer_ttl": 60,
        "edge_lease_seconds": 60,
    }
    values.update(overrides)
    return TrackerConfig(**values)  # type: ignore[arg-type]


def record_of(hashed: HashedFile, urls: tuple[str, ...] = ()) -> PackageRecord:
    t = hashed.torrent
    return PackageRecord(
        sha256=hashed.sha256,
        size=t.size,
        name=t.name,
        info_hash_v1=t.info_hash_v1,
        info_hash_v2=t.info_hash_v2,
        piece_length=t.piece_length,
        torrent=t.metainfo,
        upstream_urls=urls,
    )


def make_file(directory: Path, name: str, size: int, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@dataclass
class Published:
    path: Path
    hashed: HashedFile
    record: PackageRecord


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def tracker(tmp_path: Path, clock: FakeClock) -> AsyncIterator[app.RunningTracker]:
    running = await app.start(make_config(tmp_path), clock=clock, maintain_every=0)
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def client(tracker: app.RunningTracker) -> AsyncIterator[TrackerClient]:
    async with TrackerClient(tracker.grpc_target, token=TOKEN, timeout=5) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_bytes(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.read()


Backends = Callable[[FakeClock], Stores]
BACKENDS = [Backend.MEMORY, Backend.SQLITE, Backend.POSTGRESQL]


@pytest.fixture(params=BACKENDS, ids=[b.value for b in BACKENDS])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backends]:
    opened: list[Stores] = []
    backend: Backend = request.param
    url = ""
    if backend is Backend.POSTGRESQL:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()

    def factory(clock: FakeClock) -> Stores:
        if backend is Backend.MEMORY:
            stores = memory_stores(clock)
        else:
            stores = open_stores(url, tmp_path / "s.db", clock)
        opened.append(stores)
        return stores

    yield factory
    for stores in opened:
        stores.close()
