"""The gRPC MeshStatusService: a read-only view of the registry, the index and the swarms.

Anyone may read it (no token), like `ListEdges`; it names no peer, only
registrations (which `ListEdges` already lists) and counts. Its cost is one
scrape per swarm the peer store listed at its last sweep (in memory, or one
Redis round trip each, in a worker thread so the event loop keeps answering
announces), one read of the lease table and one index lookup for the listed
swarms (at most `status.MAX_SWARMS`), both in the store threads.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc

from aptmesh import __version__
from aptmesh.v1 import status_pb2, status_pb2_grpc
from aptmesh_tracker.client import renew_after
from aptmesh_tracker.convergence import converge
from aptmesh_tracker.index_service import StoreCalls
from aptmesh_tracker.index_store import IndexStore
from aptmesh_tracker.peerstore import PeerStore
from aptmesh_tracker.registry_store import Registry
from aptmesh_tracker.status import (
    DEFAULT_SWARMS,
    MAX_SWARMS,
    MeshStatus,
    Registration,
    Swarm,
    registration,
    to_proto,
)
from aptmesh_tracker.stores import StoreHealth
from aptmesh_tracker.swarms import SwarmCounts, TorrentSwarm, by_torrent

SERVICE_NAME = "aptmesh.v1.MeshStatusService"


class MeshStatusServicer(status_pb2_grpc.MeshStatusServiceServicer):
    def __init__(
        self,
        index: IndexStore,
        registry: Registry,
        peers: PeerStore,
        executor: Executor,
        health: StoreHealth,
        *,
        lease_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._registry = registry
        self._peers = peers
        self._call = StoreCalls(executor, health)
        self._lease = lease_seconds
        self._clock = clock

    async def GetMeshStatus(  # noqa: N802 - gRPC method name
        self,
        request: status_pb2.GetMeshStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> status_pb2.GetMeshStatusResponse:
        limit = min(request.max_swarms or DEFAULT_SWARMS, MAX_SWARMS)
        loop = asyncio.get_running_loop()
        hashes = self._peers.swarm_hashes()
        torrents = await loop.run_in_executor(None, functools.partial(self._torrents, hashes))
        status = await self._call(context, self._status, torrents, limit)
        return to_proto(status)

    def _torrents(self, hashes: list[bytes]) -> list[TorrentSwarm]:
        """In a worker thread: a Redis scrape is a round trip; an in-memory one reads two
        counters of a swarm, safe beside the event loop's writes (atomic under the GIL)."""
        counts = []
        for info_hash in hashes:
            stats = self._peers.scrape(info_hash)
            if stats.complete or stats.incomplete:
                counts.append(SwarmCounts(info_hash, stats.complete, stats.incomplete))
        return by_torrent(counts, self._index.torrent_of)

    def _status(self, torrents: list[TorrentSwarm], limit: int) -> MeshStatus:
        now = self._clock()
        regs = [
            registration(
                edge,
                end,
                lease_seconds=self._lease,
                renew_every=renew_after(self._lease),
                now=now,
            )
            for edge, end in self._registry.leases()
        ]
        edges = [r for r in regs if not r.edge.seed_box]
        shown = torrents[:limit]
        records = self._index.get_many([t.sha256 for t in shown if t.sha256])
        return MeshStatus(
            time=now,
            tracker_version=__version__,
            lease_seconds=self._lease,
            edges=tuple(edges),
            seed_boxes=tuple(_of_kind(regs, seed_box=True)),
            index_records=self._index.record_count(),
            torrents_with_peers=len(torrents),
            seeders=sum(t.seeders for t in torrents),
            leechers=sum(t.leechers for t in torrents),
            swarms=tuple(
                Swarm(t, records[t.sha256].name if t.sha256 in records else "") for t in shown
            ),
            suites=converge(r.edge for r in edges),
        )


def _of_kind(regs: list[Registration], *, seed_box: bool) -> list[Registration]:
    return [r for r in regs if r.edge.seed_box == seed_box]
