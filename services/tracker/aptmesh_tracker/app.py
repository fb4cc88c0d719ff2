"""The tracker's composition root: builds every collaborator from a config and runs them.

`start()` is what `main` runs and what tests run (with port 0, a temporary
database and a fake clock); it returns a `RunningTracker` that knows where it
listens and how to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from aptmesh import grpcserver, logs, web
from aptmesh.metrics import new_registry
from aptmesh.v1 import index_pb2_grpc, registry_pb2_grpc, status_pb2_grpc
from aptmesh_tracker import http, index_service, registry_service, status_service
from aptmesh_tracker.config import TrackerConfig
from aptmesh_tracker.metrics import TrackerMetrics
from aptmesh_tracker.peerstore import MAX_RETIRED_COUNTS, PeerStore
from aptmesh_tracker.store import SqliteStore, Store
from aptmesh_tracker.tracker import Policy, Tracker

log = logs.get(__name__)

Clock = Callable[[], float]


@dataclass
class RunningTracker:
    config: TrackerConfig
    store: Store
    peers: PeerStore
    tracker: Tracker
    registry: CollectorRegistry
    grpc: grpcserver.GrpcServer
    site: web.Site
    executor: ThreadPoolExecutor
    maintenance: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return self.site.local_url

    @property
    def announce_url(self) -> str:
        return f"{self.http_url}/announce"

    @property
    def grpc_target(self) -> str:
        return grpcserver.host_port(self.config.grpc_bind, self.grpc.port)

    async def maintain(self) -> None:
        """Forgets silent peers and expired edges (periodically, or when a test says so)."""
        self.tracker.expire()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.store.expire_edges)

    async def _maintain_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.maintain()
            except Exception:
                log.exception("tracker maintenance failed")

    async def stop(self, grace: float = 2.0) -> None:
        if self.maintenance is not None:
            self.maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.maintenance
        await self.site.stop()
        await self.grpc.stop(grace)
        self.executor.shutdown(wait=True)
        self.store.close()


async def start(
    config: TrackerConfig,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    maintain_every: float | None = None,
) -> RunningTracker:
    """Starts the gRPC and HTTP servers; `clock` replaces both the wall and monotonic clocks.

    `maintain_every` None sweeps every min(60 s, peer_ttl / 4); 0 never (tests call maintain()).
    """
    store = store or SqliteStore(config.db_path, clock or time.time)
    # Only an open tracker counts completions of arbitrary infohashes, so only it caps them.
    peers = PeerStore(
        config.peer_ttl,
        clock or time.monotonic,
        max_retired=MAX_RETIRED_COUNTS if config.open_tracker else None,
    )
    registry = new_registry("tracker")
    metrics = TrackerMetrics(registry, peers, store)
    policy = Policy(
        config.announce_interval, config.min_interval, config.numwant_default, config.numwant_max
    )
    tracker = Tracker(peers, None if config.open_tracker else store.is_tracked, policy, metrics)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker-store")
    servicers = [
        grpcserver.Servicer(
            index_service.SERVICE_NAME,
            index_pb2_grpc.add_IndexServiceServicer_to_server,
            index_service.IndexServicer(
                store, executor, token=config.publish_token, max_batch=config.max_batch
            ),
        ),
        grpcserver.Servicer(
            registry_service.SERVICE_NAME,
            registry_pb2_grpc.add_EdgeRegistryServiceServicer_to_server,
            registry_service.RegistryServicer(
                store, executor, token=config.publish_token, lease_seconds=config.edge_lease_seconds
            ),
        ),
        grpcserver.Servicer(
            status_service.SERVICE_NAME,
            status_pb2_grpc.add_MeshStatusServiceServicer_to_server,
            status_service.MeshStatusServicer(
                store,
                peers,
                executor,
                lease_seconds=config.edge_lease_seconds,
                clock=clock or time.time,
            ),
        ),
    ]
    try:
        grpc_server = await grpcserver.start(config.grpc_bind, servicers, registry)
    except BaseException:
        executor.shutdown()
        store.close()
        raise
    try:
        site = await web.start(
            http.build_app(tracker, metrics, registry), config.http_host, config.http_port
        )
    except BaseException:
        await grpc_server.stop(0)
        executor.shutdown()
        store.close()
        raise
    running = RunningTracker(config, store, peers, tracker, registry, grpc_server, site, executor)
    every = min(60.0, config.peer_ttl / 4) if maintain_every is None else maintain_every
    if every > 0:
        running.maintenance = asyncio.create_task(running._maintain_forever(every))
    return running
