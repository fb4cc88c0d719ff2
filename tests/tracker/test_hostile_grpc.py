"""Hostile gRPC input against a real tracker process: bounded memory, the right codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from aptmesh.v1 import index_pb2, index_pb2_grpc
from tests.tracker.conftest import TOKEN
from tests.tracker.process import tracker_process

MIB = 1 << 20


async def test_four_concurrent_oversized_batches_do_not_grow_the_tracker(tmp_path: Path) -> None:
    # What the issue measured: 4 x 60 MB BatchGetPackages took a fresh tracker past 512 MiB.
    junk = index_pb2.BatchGetPackagesRequest(sha256s=["a" * 64] * 900_000)  # about 60 MB
    async with tracker_process(tmp_path / "t.sqlite3") as tracker:
        before, _ = tracker.memory()
        options = [("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(tracker.grpc_target, options=options) as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            for _ in range(3):  # bounded: 12 calls in all
                calls = [stub.BatchGetPackages(junk, timeout=30) for _ in range(4)]
                results = await asyncio.gather(*calls, return_exceptions=True)
                for result in results:
                    assert isinstance(result, grpc.aio.AioRpcError), result
                    assert result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Still serving, and an honest batch still works.
            reply = await stub.BatchGetPackages(
                index_pb2.BatchGetPackagesRequest(sha256s=["b" * 64] * 1000), timeout=10
            )
            assert list(reply.missing) == ["b" * 64]
        after, peak = tracker.memory()
    assert peak - before < 40 * MIB, (before, peak, after)


@pytest.mark.parametrize(
    ("sha256s", "code"),
    [
        (["a" * 64] * 1001, grpc.StatusCode.INVALID_ARGUMENT),  # one over max_batch
        (["x" * 1500] * 50, grpc.StatusCode.INVALID_ARGUMENT),  # fits the bytes, not the rule
        # Over the method's own bound (and under the server's): refused before parsing.
        (["x" * 1500] * 60, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_batches_over_their_bounds_are_refused(
    tmp_path: Path, sha256s: list[str], code: grpc.StatusCode
) -> None:
    async with (
        tracker_process(tmp_path / "t.sqlite3") as tracker,
        grpc.aio.insecure_channel(tracker.grpc_target) as channel,
    ):
        stub = index_pb2_grpc.IndexServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchGetPackages(
                index_pb2.BatchGetPackagesRequest(sha256s=sha256s), timeout=10
            )
    assert caught.value.code() == code


async def test_a_huge_bencoded_integer_in_a_torrent_is_invalid_argument(tmp_path: Path) -> None:
    torrent = b"d4:infod6:lengthi" + b"9" * 100_000 + b"eee"
    record = index_pb2.PackageRecord(
        sha256="c" * 64,
        size=1,
        name="x.deb",
        info_hash_v1="d" * 40,
        info_hash_v2="e" * 64,
        piece_length=65536,
        torrent=torrent,
    )
    async with (
        tracker_process(
            tmp_path / "t.sqlite3", env={"APTMESH_TRACKER_PUBLISH_TOKEN": TOKEN}
        ) as tracker,
        grpc.aio.insecure_channel(tracker.grpc_target) as channel,
    ):
        stub = index_pb2_grpc.IndexServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishPackage(
                index_pb2.PublishPackageRequest(record=record),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Bytes that are no protobuf at all: INVALID_ARGUMENT, not INTERNAL.
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/aptmesh.v1.IndexService/GetPackage"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
