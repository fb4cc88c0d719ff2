"""The gRPC EdgeRegistryService: edges and seed boxes register (token needed) and renew;
anyone lists the edges and the seed boxes' summed uplink."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc

from aptmesh import logs
from aptmesh.grpcserver import abort, require_token
from aptmesh.v1 import registry_pb2, registry_pb2_grpc
from aptmesh_tracker.index_service import TOKEN_OPTION, InvalidRecord, StoreCalls, check_url
from aptmesh_tracker.records import (
    EDGE_ID,
    EDGE_ID_RULE,
    GENERATION_HASH,
    MAX_GENERATIONS,
    MAX_SUITE_CHARS,
    Edge,
    edge_from_proto,
    edge_to_proto,
)
from aptmesh_tracker.registry_store import Registry
from aptmesh_tracker.stores import StoreHealth
from aptmesh_tracker.wire import grpc_peer_ip

log = logs.get(__name__)

SERVICE_NAME = "aptmesh.v1.EdgeRegistryService"
_ZONE = re.compile(r"[A-Za-z0-9._:/@-]{0,128}")
MAX_UPLOAD_CAPACITY = 2**63 - 1  # SQLite's INTEGER is signed; no real uplink comes near it
MAX_UINT64 = 2**64 - 1  # what ListEdgesResponse.seed_upload_capacity holds


def check_edge(edge: Edge) -> None:
    """Edges and seed boxes follow the same rules, but a seed box may have no url."""
    kind = edge.kind
    if not EDGE_ID.fullmatch(edge.id):
        raise InvalidRecord(f"{kind} id must be {EDGE_ID_RULE}")
    if edge.url or not edge.seed_box:
        check_url(edge.url, f"{kind} url")
    if not _ZONE.fullmatch(edge.zone):
        raise InvalidRecord(f"{kind} zone must be at most 128 letters, digits or . _ : / @ -")
    if not 0 <= edge.upload_capacity <= MAX_UPLOAD_CAPACITY:
        raise InvalidRecord(f"{kind} upload_capacity must be at most {MAX_UPLOAD_CAPACITY}")
    check_generations(edge)


def check_generations(edge: Edge) -> None:
    if len(edge.generations) > MAX_GENERATIONS:
        raise InvalidRecord(f"{edge.kind} reports more than {MAX_GENERATIONS} generations")
    suites: set[str] = set()
    for generation in edge.generations:
        if not 0 < len(generation.suite) <= MAX_SUITE_CHARS or not generation.suite.isprintable():
            raise InvalidRecord(
                f"{edge.kind} generation suite must be 1-{MAX_SUITE_CHARS} printable characters"
            )
        if generation.suite in suites:
            raise InvalidRecord(f"{edge.kind} reports suite {generation.suite!r} twice")
        suites.add(generation.suite)
        if not GENERATION_HASH.fullmatch(generation.hash):
            raise InvalidRecord(f"{edge.kind} generation hash must be 16 lower-case hex digits")
        if not (0 <= generation.date < 2**40 and 0 <= generation.first_seen < 2**40):
            raise InvalidRecord(f"{edge.kind} generation date and first_seen must be epoch seconds")


class RegistryServicer(registry_pb2_grpc.EdgeRegistryServiceServicer):
    def __init__(
        self,
        registry: Registry,
        executor: Executor,
        health: StoreHealth,
        *,
        token: str,
        lease_seconds: int,
        peers_epoch: Callable[[], str] = lambda: "",
    ) -> None:
        """`peers_epoch` reads the peer store's epoch (no I/O: aptmesh_tracker.peerstore)."""
        self._registry = registry
        self._call = StoreCalls(executor, health)
        self._epoch = peers_epoch
        self._token = token
        self._lease = lease_seconds
        self._seen: set[tuple[str, bool]] = set()  # (id, seed_box) already logged as joined

    async def RegisterEdge(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.RegisterEdgeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.RegisterEdgeResponse:
        edge = edge_from_proto(request.edge)
        article = "a" if edge.seed_box else "an"
        await require_token(
            context, self._token, f"registering {article} {edge.kind}", option=TOKEN_OPTION
        )
        try:
            check_edge(edge)
        except InvalidRecord as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        edge = dataclasses.replace(edge, address=grpc_peer_ip(context.peer() or ""))
        await self._call(context, self._registry.register, edge, self._lease)
        if (edge.id, edge.seed_box) not in self._seen:
            self._seen.add((edge.id, edge.seed_box))
            log.info(
                "seed_box_registered" if edge.seed_box else "edge_registered",
                edge_id=edge.id,
                url=edge.url,
                zone=edge.zone,
                upload_capacity=edge.upload_capacity,
            )
        return registry_pb2.RegisterEdgeResponse(
            lease_seconds=self._lease, peers_epoch=self._epoch()
        )

    async def ListEdges(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.ListEdgesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ListEdgesResponse:
        zone = request.zone
        site = await self._call(
            context,
            self._registry.site,
            zone,
            fallback=functools.partial(self._registry.last_site, zone),
        )
        return registry_pb2.ListEdgesResponse(
            edges=[edge_to_proto(e) for e in site.edges],
            seed_upload_capacity=min(site.seed_upload_capacity, MAX_UINT64),
            peers_epoch=self._epoch(),
        )
