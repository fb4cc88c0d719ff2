"""The EdgeService gRPC surface against a running edge."""

from __future__ import annotations

import grpc
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.grpcserver import bearer_metadata
from aptmesh.v1 import edge_pb2, edge_pb2_grpc
from aptmesh_edge.app import RunningEdge
from tests.edge.conftest import HOST, EdgeFactory

ADMIN = "test-admin-token"
AUTH = bearer_metadata(ADMIN)


async def test_prefetch_pin_and_stats(make_edge: EdgeFactory, debrepo: DebRepo) -> None:
    edge: RunningEdge = await make_edge(cache_max_bytes=5 * 1024 * 1024, admin_token=ADMIN)
    huge, large = debrepo.package("aptmesh-huge"), debrepo.package("aptmesh-large")
    async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
        stub = edge_pb2_grpc.EdgeServiceStub(channel)
        paths = [f"{HOST}/debian/{p}" for p in (debrepo.INRELEASE, debrepo.PACKAGES + ".xz")]
        paths += [f"{HOST}/debian/{huge.filename}", "other.example.org/x.deb"]
        response = await stub.Prefetch(
            edge_pb2.PrefetchRequest(paths=paths), metadata=AUTH, timeout=10
        )
        assert [r.ok for r in response.results] == [True, True, True, False]
        assert response.results[2].source == "upstream"
        assert "not served by this edge" in response.results[3].error
        assert edge.blobs.get(huge.sha256) is not None
        again = await stub.Prefetch(
            edge_pb2.PrefetchRequest(paths=paths[2:3]), metadata=AUTH, timeout=10
        )
        assert again.results[0].source == "cache"

        await stub.Pin(edge_pb2.PinRequest(sha256=huge.sha256), metadata=AUTH, timeout=5)
        # Pinned, then a second file: both fit the 5 MiB limit.
        await stub.Prefetch(
            edge_pb2.PrefetchRequest(paths=[f"{HOST}/debian/{large.filename}"]),
            metadata=AUTH,
            timeout=10,
        )
        stats = await stub.GetCacheStats(edge_pb2.GetCacheStatsRequest(), timeout=5)
        assert (stats.entries, stats.pinned_entries) == (2, 1)
        assert stats.size_bytes == huge.size + large.size
        assert stats.limit_bytes == 5 * 1024 * 1024
        assert (stats.hits, stats.misses) == (1, 2)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Pin(edge_pb2.PinRequest(sha256="nope"), metadata=AUTH, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await stub.Unpin(edge_pb2.UnpinRequest(sha256=huge.sha256), metadata=AUTH, timeout=5)
        stats = await stub.GetCacheStats(edge_pb2.GetCacheStatsRequest(), timeout=5)
        assert stats.pinned_entries == 0


async def test_prefetch_by_sha256_of_a_verified_index(
    make_edge: EdgeFactory, debrepo: DebRepo
) -> None:
    edge: RunningEdge = await make_edge(admin_token=ADMIN)
    medium = debrepo.package("aptmesh-medium")
    async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
        stub = edge_pb2_grpc.EdgeServiceStub(channel)
        request = edge_pb2.PrefetchRequest(sha256s=[medium.sha256, "0" * 64, "nope"])
        unknown = await stub.Prefetch(request, metadata=AUTH, timeout=10)
        assert [r.ok for r in unknown.results] == [False, False, False]
        assert "no verified Packages index" in unknown.results[0].error
        assert "64 hex digits" in unknown.results[2].error
        # Once the edge has verified the indexes (as apt's update makes it), it knows where.
        indexes = [f"{HOST}/debian/{p}" for p in (debrepo.INRELEASE, debrepo.PACKAGES + ".xz")]
        await stub.Prefetch(edge_pb2.PrefetchRequest(paths=indexes), metadata=AUTH, timeout=10)
        response = await stub.Prefetch(request, metadata=AUTH, timeout=10)
        result = response.results[0]
        assert (result.path, result.ok, result.source) == (medium.sha256, True, "upstream")
        assert [r.ok for r in response.results[1:]] == [False, False]
    assert edge.blobs.get(medium.sha256) is not None


async def test_control_calls_need_the_admin_token(make_edge: EdgeFactory) -> None:
    requests = {
        "Prefetch": edge_pb2.PrefetchRequest(paths=[f"{HOST}/debian/x.deb"]),
        "Pin": edge_pb2.PinRequest(sha256="a" * 64),
        "Unpin": edge_pb2.UnpinRequest(sha256="a" * 64),
    }
    for token in ("", ADMIN):  # an edge with no admin token refuses them all
        edge: RunningEdge = await make_edge(admin_token=token)
        async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            for name, request in requests.items():
                for metadata in ((), bearer_metadata("wrong"), AUTH if not token else ()):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await getattr(stub, name)(request, metadata=metadata, timeout=5)
                    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            # Reading stays open.
            await stub.GetCacheStats(edge_pb2.GetCacheStatsRequest(), timeout=5)
        assert edge.blobs.stats().pinned_entries == 0
