"""The gRPC EdgeRegistryService: edges register (token needed) and renew; anyone lists."""

from __future__ import annotations

import asyncio
import functools
import re
from concurrent.futures import Executor
from typing import Any

import grpc

from aptmesh import logs
from aptmesh.tracker.index_service import InvalidRecord, abort, check_url, require_token
from aptmesh.tracker.records import Edge, edge_from_proto, edge_to_proto
from aptmesh.tracker.store import Store
from aptmesh.v1 import registry_pb2, registry_pb2_grpc

log = logs.get(__name__)

SERVICE_NAME = "aptmesh.v1.EdgeRegistryService"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_ZONE = re.compile(r"[A-Za-z0-9._:/@-]{0,128}")
MAX_UPLOAD_CAPACITY = 2**63 - 1  # SQLite's INTEGER is signed; no real uplink comes near it


def check_edge(edge: Edge) -> None:
    if not _ID.fullmatch(edge.id):
        raise InvalidRecord(
            "edge id must be 1-128 letters, digits or . _ : @ - (starting with a letter or digit)"
        )
    check_url(edge.url, "edge url")
    if not _ZONE.fullmatch(edge.zone):
        raise InvalidRecord("edge zone must be at most 128 letters, digits or . _ : / @ -")
    if not 0 <= edge.upload_capacity <= MAX_UPLOAD_CAPACITY:
        raise InvalidRecord(f"edge upload_capacity must be at most {MAX_UPLOAD_CAPACITY}")


class RegistryServicer(registry_pb2_grpc.EdgeRegistryServiceServicer):
    def __init__(self, store: Store, executor: Executor, *, token: str, lease_seconds: int) -> None:
        self._store = store
        self._executor = executor
        self._token = token
        self._lease = lease_seconds
        self._seen: set[str] = set()  # edge ids already logged as joined

    async def RegisterEdge(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.RegisterEdgeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.RegisterEdgeResponse:
        await require_token(context, self._token, "registering an edge")
        edge = edge_from_proto(request.edge)
        try:
            check_edge(edge)
        except InvalidRecord as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, functools.partial(self._store.register_edge, edge, self._lease)
        )
        if edge.id not in self._seen:
            self._seen.add(edge.id)
            log.info(
                "edge registered",
                edge_id=edge.id,
                url=edge.url,
                zone=edge.zone,
                upload_capacity=edge.upload_capacity,
            )
        return registry_pb2.RegisterEdgeResponse(lease_seconds=self._lease)

    async def ListEdges(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.ListEdgesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ListEdgesResponse:
        loop = asyncio.get_running_loop()
        edges = await loop.run_in_executor(
            self._executor, functools.partial(self._store.live_edges, request.zone)
        )
        return registry_pb2.ListEdgesResponse(edges=[edge_to_proto(e) for e in edges])
