"""The gRPC CollectionService: define, update, list, show and delete collections (admin token),
edges' progress reports (publish token), and the status of a collection on its edges.

The status merges each live edge of the targeted zones (the registry) with its
last report, so an edge that has not reported yet shows zero counts; the CLI's
`status --wait` and the edges' own `/_aptmesh/collections` read the same records.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import grpc

from aptmesh import collection as col
from aptmesh import logs
from aptmesh.grpcserver import abort, require_token
from aptmesh.v1 import collection_pb2, collection_pb2_grpc
from aptmesh_tracker.collection_store import CollectionStore, VersionConflict
from aptmesh_tracker.index_service import StoreCalls
from aptmesh_tracker.registry_store import Registry
from aptmesh_tracker.stores import StoreHealth

log = logs.get(__name__)

SERVICE_NAME = "aptmesh.v1.CollectionService"
ADMIN_OPTION = "admin_token (APTMESH_TRACKER_ADMIN_TOKEN)"  # noqa: S105 - a name
PUBLISH_OPTION = "publish_token (APTMESH_TRACKER_PUBLISH_TOKEN)"  # noqa: S105 - a name
# A spec of 10,000 requests and 1,000 files, each bounded by MAX_TEXT, fits in 8 MiB.
REQUEST_BOUNDS = {"PutCollection": 8 << 20}


class CollectionServicer(collection_pb2_grpc.CollectionServiceServicer):
    def __init__(
        self,
        store: CollectionStore,
        registry: Registry,
        executor: Executor,
        health: StoreHealth,
        *,
        admin_token: str,
        publish_token: str,
    ) -> None:
        self._store = store
        self._registry = registry
        self._call = StoreCalls(executor, health)
        self._admin = admin_token or publish_token
        self._admin_option = ADMIN_OPTION if admin_token else PUBLISH_OPTION
        self._publish = publish_token

    async def PutCollection(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.PutCollectionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.PutCollectionResponse:
        await require_token(context, self._admin, "changing collections", option=self._admin_option)
        try:
            spec = col.check_spec(col.spec_from_proto(request.spec))
        except col.SpecError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        expected = request.expected_version if request.HasField("expected_version") else None
        try:
            stored = await self._call(context, self._store.put, spec, expected)
        except VersionConflict as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("collection_stored", collection=spec.name, version=stored.version)
        return collection_pb2.PutCollectionResponse(collection=col.collection_to_proto(stored))

    async def _get(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> col.Collection:
        found = await self._call(context, self._store.get, name)
        if found is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no collection named {name[:80]!r}")
        return found

    async def GetCollection(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.GetCollectionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.GetCollectionResponse:
        found = await self._get(request.name, context)
        return collection_pb2.GetCollectionResponse(collection=col.collection_to_proto(found))

    async def ListCollections(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.ListCollectionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.ListCollectionsResponse:
        found = await self._call(context, self._store.all, request.zone)
        return collection_pb2.ListCollectionsResponse(
            collections=[col.collection_to_proto(c) for c in found]
        )

    async def DeleteCollection(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.DeleteCollectionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.DeleteCollectionResponse:
        await require_token(context, self._admin, "changing collections", option=self._admin_option)
        if not await self._call(context, self._store.delete, request.name):
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"no collection named {request.name[:80]!r}"
            )
        log.info("collection_deleted", collection=request.name)
        return collection_pb2.DeleteCollectionResponse()

    async def ReportCollectionStatus(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.ReportCollectionStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.ReportCollectionStatusResponse:
        await require_token(context, self._publish, "reporting", option=PUBLISH_OPTION)
        status = col.status_from_proto(request.status)
        if not status.edge_id or len(status.edge_id) > 255 or len(status.errors) > 100:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a report needs an edge_id")
        await self._call(context, self._store.report, status)
        return collection_pb2.ReportCollectionStatusResponse()

    async def GetCollectionStatus(  # noqa: N802 - gRPC method name
        self,
        request: collection_pb2.GetCollectionStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> collection_pb2.GetCollectionStatusResponse:
        found = await self._get(request.name, context)
        reports = await self._call(context, self._store.reports, request.name)
        edges = await self._call(context, self._registry.live_edges, "")
        merged = col.merged_statuses(found, ((e.id, e.zone) for e in edges), reports)
        return collection_pb2.GetCollectionStatusResponse(
            collection=col.collection_to_proto(found),
            edges=[col.status_to_proto(s) for s in merged],
        )
