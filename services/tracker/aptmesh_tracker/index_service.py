"""The gRPC IndexService: publish records (token needed), look them up singly or in batches."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from aptmesh import logs
from aptmesh.grpcserver import abort, repeated_bytes, require_token
from aptmesh.torrent import TorrentError, parse_torrent
from aptmesh.v1 import index_pb2, index_pb2_grpc
from aptmesh_tracker.index_store import IndexStore, StoreUnavailable
from aptmesh_tracker.records import PackageRecord, record_from_proto, record_to_proto
from aptmesh_tracker.stores import Component, StoreHealth

log = logs.get(__name__)

SERVICE_NAME = "aptmesh.v1.IndexService"
STORE_UNAVAILABLE = "the tracker cannot reach its store now; retry later"
MAX_URLS = 32
MAX_URL_LENGTH = 2048
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")

# The largest torrent a record may carry. A package's torrent holds 20 + 32 bytes per
# piece and a piece is at least 1/1024 of the file (up to 4 MiB pieces), so up to a
# 4 GiB file it is under 60 KiB; 1 MiB leaves room for files of some 80 GiB.
MAX_TORRENT = 1 << 20
# One PublishPackage request: the torrent, the URLs and the small fields.
MAX_PUBLISH_REQUEST = MAX_TORRENT + repeated_bytes(MAX_URLS, MAX_URL_LENGTH)
TOKEN_OPTION = "publish_token (APTMESH_TRACKER_PUBLISH_TOKEN)"  # noqa: S105 - a name


def request_bounds(max_batch: int) -> dict[str, int]:
    """Most bytes of one request per method (grpcserver.Servicer.max_request)."""
    return {
        "PublishPackage": MAX_PUBLISH_REQUEST,
        # A hash may come in upper case or be garbage of any length; up to 64 bytes each
        # is what a legitimate batch holds.
        "BatchGetPackages": repeated_bytes(max_batch, 64),
    }


class InvalidRecord(ValueError):
    """A published record is malformed or disagrees with its torrent; the text says how."""


def check_url(url: str, what: str) -> None:
    parts = urlsplit(url) if len(url) <= MAX_URL_LENGTH else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRecord(f"{what} must be an http:// or https:// URL: {url[:100]!r}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidRecord(f"{what} contains spaces or control characters: {url[:100]!r}")


def check_sha256(text: str) -> None:
    if not _HEX64.fullmatch(text):
        raise InvalidRecord(f"sha256 must be 64 lower-case hex digits: {text[:80]!r}")


def check_record(record: PackageRecord) -> None:
    """Raises InvalidRecord unless the record is well formed and its torrent agrees with it."""
    check_sha256(record.sha256)
    if not _HEX40.fullmatch(record.info_hash_v1):
        raise InvalidRecord("info_hash_v1 must be 40 lower-case hex digits")
    if not _HEX64.fullmatch(record.info_hash_v2):
        raise InvalidRecord("info_hash_v2 must be 64 lower-case hex digits (the full v2 hash)")
    if not record.name or "/" in record.name or "\0" in record.name or len(record.name) > 255:
        raise InvalidRecord(f"name must be a file's basename: {record.name[:100]!r}")
    if len(record.upstream_urls) > MAX_URLS:
        raise InvalidRecord(f"at most {MAX_URLS} upstream_urls per record")
    for url in record.upstream_urls:
        check_url(url, "upstream_urls")
    if len(record.torrent) > MAX_TORRENT:
        raise InvalidRecord(f"torrent is {len(record.torrent)} bytes, at most {MAX_TORRENT}")
    try:
        torrent = parse_torrent(record.torrent)
    except TorrentError as exc:
        raise InvalidRecord(f"torrent: {exc}") from None
    disagree = [
        f"{what} {mine!r} != torrent's {theirs!r}"
        for what, mine, theirs in (
            ("name", record.name, torrent.name),
            ("size", record.size, torrent.size),
            ("piece_length", record.piece_length, torrent.piece_length),
            ("info_hash_v1", record.info_hash_v1, torrent.info_hash_v1),
            ("info_hash_v2", record.info_hash_v2, torrent.info_hash_v2),
        )
        if mine != theirs
    ]
    if disagree:
        raise InvalidRecord("record and torrent disagree: " + "; ".join(disagree))


class StoreCalls:
    """Runs store calls in the store threads for a servicer: an unreachable store is
    UNAVAILABLE to the caller (retryable) and recorded in the stores' health."""

    def __init__(self, executor: Executor, health: StoreHealth) -> None:
        self._executor = executor
        self._health = health

    async def __call__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        fn: Callable[..., T],
        *args: Any,
        fallback: Callable[[], T] | None = None,
    ) -> T:
        """`fallback` answers instead of UNAVAILABLE when the store is unreachable."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except StoreUnavailable as exc:
            self._health.failed(Component.INDEX, str(exc))
            if fallback is not None:
                return fallback()
            # The cause (the database's address, the driver's words) stays in the log.
            await abort(context, grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE)
        self._health.ok(Component.INDEX)
        return result


class IndexServicer(index_pb2_grpc.IndexServiceServicer):
    def __init__(
        self,
        store: IndexStore,
        executor: Executor,
        health: StoreHealth,
        *,
        token: str,
        max_batch: int,
    ) -> None:
        """`executor` runs the store's calls (its threads)."""
        self._store = store
        self._call = StoreCalls(executor, health)
        self._token = token
        self._max_batch = max_batch

    async def PublishPackage(  # noqa: N802 - gRPC method name
        self,
        request: index_pb2.PublishPackageRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> index_pb2.PublishPackageResponse:
        await require_token(context, self._token, "publishing", option=TOKEN_OPTION)
        if not request.HasField("record"):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "record is missing")
        record = record_from_proto(request.record)
        try:
            check_record(record)
        except InvalidRecord as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        created = await self._call(context, self._store.put, record)
        log.info(
            "package_published",
            sha256=record.sha256,
            name=record.name,
            info_hash_v1=record.info_hash_v1,
            created=created,
        )
        return index_pb2.PublishPackageResponse(created=created)

    async def GetPackage(  # noqa: N802 - gRPC method name
        self,
        request: index_pb2.GetPackageRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> index_pb2.GetPackageResponse:
        sha256 = request.sha256.lower()
        try:
            check_sha256(sha256)
        except InvalidRecord as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        record = await self._call(context, self._store.get, sha256)
        if record is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no package with sha256 {sha256}")
        return index_pb2.GetPackageResponse(record=record_to_proto(record))

    async def BatchGetPackages(  # noqa: N802 - gRPC method name
        self,
        request: index_pb2.BatchGetPackagesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> index_pb2.BatchGetPackagesResponse:
        if len(request.sha256s) > self._max_batch:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {self._max_batch} hashes per call, got {len(request.sha256s)}",
            )
        wanted = list(dict.fromkeys(s.lower() for s in request.sha256s))
        try:
            for sha256 in wanted:
                check_sha256(sha256)
        except InvalidRecord as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        found = await self._call(context, self._store.get_many, wanted)
        return index_pb2.BatchGetPackagesResponse(
            records=[record_to_proto(found[s]) for s in wanted if s in found],
            missing=[s for s in wanted if s not in found],
        )
