"""Fuzz target: a real tracker gRPC server fed random bytes and random messages.

Every answer must be a deliberate status (OK, INVALID_ARGUMENT, NOT_FOUND,
RESOURCE_EXHAUSTED for an over-size request, UNAUTHENTICATED), never UNKNOWN or
INTERNAL (an exception the servicer did not translate), and the server must stay up.
The tracker runs on its own event loop in a thread, so Hypothesis drives it with
blocking calls and one server serves every example.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from aptmesh.grpcserver import bearer_metadata
from aptmesh.torrent import HashedFile, make_torrent
from aptmesh.v1 import index_pb2, registry_pb2
from aptmesh_tracker import app
from tests.tracker.conftest import TOKEN, make_config

pytestmark = pytest.mark.fuzz

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
}
METHODS = [
    "/aptmesh.v1.IndexService/PublishPackage",
    "/aptmesh.v1.IndexService/GetPackage",
    "/aptmesh.v1.IndexService/BatchGetPackages",
    "/aptmesh.v1.EdgeRegistryService/RegisterEdge",
    "/aptmesh.v1.EdgeRegistryService/ListEdges",
]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    tmp = tmp_path_factory.mktemp("fuzz-tracker")
    loop = asyncio.new_event_loop()
    started: list[app.RunningTracker] = []
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        started.append(loop.run_until_complete(app.start(make_config(tmp), maintain_every=0)))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fuzz-tracker", daemon=True)
    thread.start()
    assert ready.wait(30), "the tracker did not start"
    with grpc.insecure_channel(started[0].grpc_target) as chan:
        yield chan
        health = health_pb2_grpc.HealthStub(chan)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING  # still up
    asyncio.run_coroutine_threadsafe(started[0].stop(0), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    thread.join(30)
    loop.close()


def call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    # bytes in, bytes out: no client-side parsing
    stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    try:
        stub(payload, metadata=bearer_metadata(TOKEN), timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # grpc's RpcError is also a Call
        return code
    return grpc.StatusCode.OK


@given(st.sampled_from(METHODS), st.binary(max_size=2000))
def test_random_bytes_get_deliberate_codes(channel: grpc.Channel, method: str, data: bytes) -> None:
    assert call(channel, method, data) in DELIBERATE


def _real() -> HashedFile:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed_1_all.deb"
        path.write_bytes(bytes(range(256)) * 400)
        return make_torrent(path)


REAL = _real()
REAL_TORRENT = REAL.torrent.metainfo


@st.composite
def mutated_torrents(draw: st.DrawFn) -> bytes:
    data = bytearray(REAL_TORRENT)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "digits"]))
        if action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data[at:at] = b"9" * draw(st.integers(1, 5000))
    return bytes(data)


hex_ish = st.text("0123456789abcdefABCDEFxyz", max_size=70)


def real_or(value: object, other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """The real record's field half the time, so examples get past the first checks."""
    return st.just(value) | other


records = st.builds(
    index_pb2.PackageRecord,
    sha256=real_or(REAL.sha256, hex_ish),
    size=real_or(REAL.torrent.size, st.integers(0, 2**64 - 1)),
    name=real_or(REAL.torrent.name, st.text(max_size=40)),
    info_hash_v1=real_or(REAL.torrent.info_hash_v1, hex_ish),
    info_hash_v2=real_or(REAL.torrent.info_hash_v2, hex_ish),
    piece_length=real_or(REAL.torrent.piece_length, st.integers(0, 2**32 - 1)),
    torrent=mutated_torrents() | st.binary(max_size=200),
    upstream_urls=st.lists(st.text(max_size=60) | st.just("http://h/x.deb"), max_size=4),
)
edges = st.builds(
    registry_pb2.Edge,
    id=st.text(max_size=80),
    url=st.text(max_size=80),
    zone=st.text(max_size=140),
    upload_capacity=st.integers(0, 2**64 - 1),
    seed_box=st.booleans(),
)


@given(records)
def test_random_records_get_deliberate_codes(channel: grpc.Channel, record: object) -> None:
    request = index_pb2.PublishPackageRequest(record=record)  # type: ignore[arg-type]
    assert call(channel, METHODS[0], request.SerializeToString()) in DELIBERATE


@given(edges)
def test_random_registrations_get_deliberate_codes(channel: grpc.Channel, edge: object) -> None:
    request = registry_pb2.RegisterEdgeRequest(edge=edge)  # type: ignore[arg-type]
    assert call(channel, METHODS[3], request.SerializeToString()) in DELIBERATE


@given(st.lists(hex_ish | st.text(max_size=80), max_size=50))
def test_random_batches_get_deliberate_codes(channel: grpc.Channel, hashes: list[str]) -> None:
    request = index_pb2.BatchGetPackagesRequest(sha256s=hashes)
    assert call(channel, METHODS[2], request.SerializeToString()) in DELIBERATE
