"""The EdgeService gRPC surface: prefetch, pin and unpin, cache statistics.

Protobuf types stop here: the servicer translates them to calls on
`FileService` and `BlobStore` and their errors to status codes. Prefetch, Pin
and Unpin change what the edge holds and fetches, so they need the admin
token (`admin_token`); GetCacheStats is open.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc

from aptmesh.grpcserver import repeated_bytes, require_token
from aptmesh.v1 import edge_pb2, edge_pb2_grpc
from aptmesh_edge.cache import BlobStore, TooManyPins
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.files import FileService
from aptmesh_edge.urls import Resource, Upstreams, UrlError, parse_target

SERVICE_NAME = "aptmesh.v1.EdgeService"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_PREFETCH = 1000
MAX_PREFETCH_PATH = 512  # bytes a prefetched path averages at most (Debian's are ~100)
# Most bytes of one request per method (grpcserver.Servicer.max_request).
REQUEST_BOUNDS = {"Prefetch": repeated_bytes(MAX_PREFETCH, MAX_PREFETCH_PATH)}
TOKEN_OPTION = "admin_token (APTMESH_EDGE_ADMIN_TOKEN)"  # noqa: S105 - a name


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    def __init__(
        self, files: FileService, blobs: BlobStore, upstreams: Upstreams, *, admin_token: str
    ) -> None:
        self._files = files
        self._blobs = blobs
        self._upstreams = upstreams
        self._token = admin_token

    async def Prefetch(  # noqa: N802 - gRPC method name
        self, request: edge_pb2.PrefetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.PrefetchResponse:
        await require_token(context, self._token, "prefetching", option=TOKEN_OPTION)
        if len(request.paths) + len(request.sha256s) > MAX_PREFETCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_PREFETCH} files per call"
            )
        results = [await self._prefetch(path, self._resolve_path) for path in request.paths]
        results += [await self._prefetch(sha, self._resolve_sha256) for sha in request.sha256s]
        return edge_pb2.PrefetchResponse(results=results)

    def _resolve_path(self, path: str) -> Resource:
        target = parse_target("/" + path.lstrip("/"))
        if target is None:
            raise UrlError(400, "not HOST/path")
        return self._upstreams.resolve(target)

    def _resolve_sha256(self, sha256: str) -> Resource:
        if not _HEX64.match(sha256):
            raise UrlError(400, "sha256 must be 64 hex digits")
        resource = self._files.verifier.locate(sha256)
        if resource is None:
            raise UrlError(404, "no verified Packages index this edge has seen lists it")
        return resource

    async def _prefetch(
        self, path: str, resolve: Callable[[str], Resource]
    ) -> edge_pb2.PrefetchResult:
        """Fetches one file into the cache; `path` is a path or a SHA-256, as requested."""
        try:
            resource = resolve(path)
            body = await self._files.get(resource)
            await body.drain()
        except UrlError as exc:
            return edge_pb2.PrefetchResult(path=path, ok=False, error=exc.text)
        except DownloadFailed as exc:
            return edge_pb2.PrefetchResult(path=path, ok=False, error=exc.text)
        return edge_pb2.PrefetchResult(path=path, ok=True, source=body.source.value)

    async def Pin(  # noqa: N802 - gRPC method name
        self, request: edge_pb2.PinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.PinResponse:
        await require_token(context, self._token, "pinning", option=TOKEN_OPTION)
        if not _HEX64.match(request.sha256):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sha256 must be 64 hex digits")
        try:
            self._blobs.pin(request.sha256)
        except TooManyPins as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self._files.update_gauges()
        return edge_pb2.PinResponse()

    async def Unpin(  # noqa: N802 - gRPC method name
        self, request: edge_pb2.UnpinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.UnpinResponse:
        await require_token(context, self._token, "unpinning", option=TOKEN_OPTION)
        if not _HEX64.match(request.sha256):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sha256 must be 64 hex digits")
        self._blobs.unpin(request.sha256)
        self._files.update_gauges()
        return edge_pb2.UnpinResponse()

    async def GetCacheStats(  # noqa: N802 - gRPC method name
        self, request: edge_pb2.GetCacheStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.GetCacheStatsResponse:
        stats = self._blobs.stats()
        hits, misses = self._files.counts()
        return edge_pb2.GetCacheStatsResponse(
            size_bytes=stats.size_bytes,
            limit_bytes=stats.limit_bytes,
            entries=stats.entries,
            pinned_entries=stats.pinned_entries,
            memory_bytes=stats.memory_bytes,
            hits=hits,
            misses=misses,
        )
