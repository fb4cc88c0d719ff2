"""The gRPC MeshStatusService: a read-only view of the registry, the index and the swarms.

Anyone may read it (no token), like `ListEdges`; it names no peer, only
registrations (which `ListEdges` already lists) and counts. Its cost is one
pass over the live swarms (in memory) and one index lookup per listed swarm,
capped by `status.MAX_SWARMS`.
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
from aptmesh_tracker.peerstore import PeerStore
from aptmesh_tracker.status import (
    DEFAULT_SWARMS,
    MAX_SWARMS,
    MeshStatus,
    Registration,
    Swarm,
    registration,
    to_proto,
)
from aptmesh_tracker.store import Store
from aptmesh_tracker.swarms import SwarmCounts, TorrentSwarm, by_torrent

SERVICE_NAME = "aptmesh.v1.MeshStatusService"


class MeshStatusServicer(status_pb2_grpc.MeshStatusServiceServicer):
    def __init__(
        self,
        store: Store,
        peers: PeerStore,
        executor: Executor,
        *,
        lease_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._peers = peers
        self._executor = executor
        self._lease = lease_seconds
        self._clock = clock

    async def GetMeshStatus(  # noqa: N802 - gRPC method name
        self,
        request: status_pb2.GetMeshStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> status_pb2.GetMeshStatusResponse:
        limit = min(request.max_swarms or DEFAULT_SWARMS, MAX_SWARMS)
        # The peer store's one writer is the event loop: read it here, the store in its thread.
        counts = []
        for info_hash in self._peers.swarm_hashes():
            stats = self._peers.scrape(info_hash)
            if stats.complete or stats.incomplete:
                counts.append(SwarmCounts(info_hash, stats.complete, stats.incomplete))
        torrents = by_torrent(counts, self._store.torrent_of)
        loop = asyncio.get_running_loop()
        status = await loop.run_in_executor(
            self._executor, functools.partial(self._status, torrents, limit)
        )
        return to_proto(status)

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
            for edge, end in self._store.leases()
        ]
        shown = torrents[:limit]
        records = self._store.get_many([t.sha256 for t in shown if t.sha256])
        return MeshStatus(
            time=now,
            tracker_version=__version__,
            lease_seconds=self._lease,
            edges=tuple(_of_kind(regs, seed_box=False)),
            seed_boxes=tuple(_of_kind(regs, seed_box=True)),
            index_records=self._store.record_count(),
            torrents_with_peers=len(torrents),
            seeders=sum(t.seeders for t in torrents),
            leechers=sum(t.leechers for t in torrents),
            swarms=tuple(
                Swarm(t, records[t.sha256].name if t.sha256 in records else "") for t in shown
            ),
        )


def _of_kind(regs: list[Registration], *, seed_box: bool) -> list[Registration]:
    return [r for r in regs if r.edge.seed_box == seed_box]
