"""Replicas on real PostgreSQL and Redis: they share one index, registry and set of swarms, and
keep answering announces while a store is down, recovering without a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aptmesh.testing import wait_until
from aptmesh.torrent import make_torrent
from aptmesh_tracker import app, wire
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import IndexUnavailable, TrackerClient
from aptmesh_tracker.records import Edge, PackageRecord
from aptmesh_tracker.wire import AnnounceRequest
from tests.fixtures.datastores import PostgresServer, RedisServer
from tests.tracker.conftest import TOKEN, get_bytes, make_config, make_file, record_of

pytestmark = pytest.mark.integration

Replica = Callable[[str, str], AbstractAsyncContextManager[RunningTracker]]


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    @asynccontextmanager
    async def start(store: str, peer_store: str) -> AsyncIterator[RunningTracker]:
        config = make_config(
            tmp_path, store=store, peer_store=peer_store, store_refresh_interval=0.2
        )
        running = await app.start(config, maintain_every=0)
        try:
            yield running
        finally:
            await running.stop(grace=0)

    return start


@pytest.fixture
def record(tmp_path: Path) -> PackageRecord:
    return record_of(make_torrent(make_file(tmp_path / "f", "big_1.0_amd64.deb", 300_000)))


async def announce(
    http: aiohttp.ClientSession, tracker: RunningTracker, request: AnnounceRequest
) -> wire.AnnounceResponse:
    url = tracker.announce_url + "?" + wire.encode_announce_request(request)
    return wire.decode_announce_response(await get_bytes(http, url))


async def tracked_by(http: aiohttp.ClientSession, tracker: RunningTracker, ih: bytes) -> bool:
    url = (
        tracker.announce_url
        + "?"
        + wire.encode_announce_request(AnnounceRequest(ih, b"P" * 20, 9, left=0, event="stopped"))
    )
    return b"failure reason" not in await get_bytes(http, url)


async def readiness(http: aiohttp.ClientSession, tracker: RunningTracker) -> tuple[int, str]:
    async with http.get(tracker.http_url + "/readyz") as response:
        return response.status, await response.text()


async def metric(http: aiohttp.ClientSession, tracker: RunningTracker, line: str) -> bool:
    return line in (await get_bytes(http, tracker.http_url + "/metrics")).decode()


async def test_two_replicas_share_index_registry_and_swarms(
    replica: Replica, postgres_url: str, redis_url: str, record: PackageRecord
) -> None:
    async with (
        replica(postgres_url, redis_url) as one,
        replica(postgres_url, redis_url) as two,
        TrackerClient(one.grpc_target, token=TOKEN, timeout=5) as to_one,
        TrackerClient(two.grpc_target, token=TOKEN, timeout=5) as to_two,
        aiohttp.ClientSession() as http,
    ):
        assert await to_one.publish(record) is True
        assert await to_two.get(record.sha256) == record  # publish to one, read from the other
        await to_two.register_edge(Edge("edge-1", "http://192.0.2.1:3142", "lab"))
        assert [e.id for e in await to_one.list_edges("lab")] == ["edge-1"]
        v1, _ = record.tracker_hashes()
        await wait_until(lambda: tracked_by(http, two, v1), what="replica two tracks it")
        seed = AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="started")
        assert (await announce(http, one, seed)).peers == ()
        leech = AnnounceRequest(v1, b"L" * 20, 7002, left=10, event="started")
        got = await announce(http, two, leech)  # a leecher on the other replica finds the seed
        assert [wire.split_address(p.address) for p in got.peers] == [("127.0.0.1", 7001)]
        assert (got.complete, got.incomplete) == (1, 1)
        back = await announce(http, one, AnnounceRequest(v1, b"S" * 20, 7001, left=0))
        assert [wire.split_address(p.address) for p in back.peers] == [("127.0.0.1", 7002)]
        assert (await readiness(http, one))[0] == 200


INDEX_SERVICE = "aptmesh.v1.IndexService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def grpc_health(tracker: RunningTracker, service: str) -> int:
    async with grpc.aio.insecure_channel(tracker.grpc_target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


async def test_postgres_down_announces_go_on_and_the_tracker_recovers(
    replica: Replica,
    own_postgres: PostgresServer,
    redis_url: str,
    record: PackageRecord,
    tmp_path: Path,
) -> None:
    async with (
        replica(own_postgres.url(), redis_url) as tracker,
        TrackerClient(tracker.grpc_target, token=TOKEN, timeout=10) as client,
        aiohttp.ClientSession() as http,
    ):
        await client.publish(record)
        await client.register_edge(Edge("edge-1", "http://192.0.2.1:3142", "lab"))
        assert [e.id for e in await client.list_edges("lab")] == ["edge-1"]
        v1, _ = record.tracker_hashes()
        own_postgres.stop("immediate")
        assert await tracker.refresh() is False  # what the refresh loop does every interval
        status, text = await readiness(http, tracker)
        assert status == 503 and "index store unreachable" in text
        assert await metric(http, tracker, 'aptmesh_tracker_store_up{store="index"} 0.0')
        assert await grpc_health(tracker, INDEX_SERVICE) == NOT_SERVING  # readiness in k8s
        assert await grpc_health(tracker, "") == SERVING  # liveness: no restart
        # announces are answered from what the tracker knows
        seed = AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="started")
        assert (await announce(http, tracker, seed)).complete == 1
        other = record_of(make_torrent(make_file(tmp_path / "g", "other_1.0_all.deb", 90_000)))
        with pytest.raises(IndexUnavailable):
            await client.publish(other)
        with pytest.raises(IndexUnavailable):
            await client.register_edge(Edge("edge-2", "http://192.0.2.2:3142", "lab"))
        # the edge list the registry last read, rather than none
        assert [e.id for e in await client.list_edges("lab")] == ["edge-1"]
        own_postgres.start()
        await wait_until(tracker.refresh, within=30, what="the store back")
        assert (await readiness(http, tracker))[0] == 200
        assert await metric(http, tracker, 'aptmesh_tracker_store_up{store="index"} 1.0')
        assert await grpc_health(tracker, INDEX_SERVICE) == SERVING
        assert await client.publish(other) is True  # no restart


async def test_redis_down_announces_go_on_and_the_swarms_return(
    replica: Replica, postgres_url: str, own_redis: RedisServer, record: PackageRecord
) -> None:
    async with (
        replica(postgres_url, own_redis.url()) as one,
        replica(postgres_url, own_redis.url()) as two,
        TrackerClient(one.grpc_target, token=TOKEN, timeout=5) as client,
        aiohttp.ClientSession() as http,
    ):
        await client.publish(record)
        v1, _ = record.tracker_hashes()
        await wait_until(lambda: tracked_by(http, two, v1), what="replica two tracks it")
        own_redis.stop()
        seed = AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="started")
        leech = AnnounceRequest(v1, b"L" * 20, 7002, left=10, event="started")
        assert (await announce(http, one, seed)).complete == 1  # from this replica's memory
        got = await announce(http, one, leech)
        assert [wire.split_address(p.address) for p in got.peers] == [("127.0.0.1", 7001)]
        status, text = await readiness(http, one)
        assert status == 503 and "peers store unreachable" in text
        assert await metric(http, one, 'aptmesh_tracker_store_up{store="peers"} 0.0')
        own_redis.start()
        await one.maintain()  # the sweep tries Redis again at once
        await two.maintain()
        assert (await readiness(http, one))[0] == 200
        # the swarm fills again in Redis as peers re-announce, seen from either replica
        await announce(http, one, AnnounceRequest(v1, b"S" * 20, 7001, left=0))
        got = await announce(http, two, AnnounceRequest(v1, b"L" * 20, 7002, left=10))
        assert [wire.split_address(p.address) for p in got.peers] == [("127.0.0.1", 7001)]
