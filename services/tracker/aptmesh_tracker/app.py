"""The tracker's composition root: builds every collaborator from a config and runs them.

`start()` is what `main` runs and what tests run (with port 0, a temporary
database and a fake clock); it returns a `RunningTracker` that knows where it
listens and how to stop.

With a shared store (`config.store` a PostgreSQL URL) a refresh loop catches
the in-memory caches up with what other replicas wrote every
`store_refresh_interval` seconds, and its outcome is the store's health: the
tracker goes on answering announces from its caches while the store is
unreachable, reports that in /readyz and `aptmesh_tracker_store_up`, and
recovers by itself when the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from aptmesh import grpcserver, logs, web
from aptmesh.metrics import new_registry
from aptmesh.v1 import collection_pb2_grpc, index_pb2_grpc, registry_pb2_grpc, status_pb2_grpc
from aptmesh_tracker import (
    collection_service,
    http,
    index_service,
    registry_service,
    status_service,
)
from aptmesh_tracker.config import TrackerConfig
from aptmesh_tracker.index_store import StoreUnavailable
from aptmesh_tracker.metrics import TrackerMetrics
from aptmesh_tracker.peerstore import MAX_RETIRED_COUNTS, MemoryPeerStore, PeerStore
from aptmesh_tracker.redis_peerstore import RedisPeerStore
from aptmesh_tracker.stores import Component, Stores, open_stores
from aptmesh_tracker.tracker import Policy, Tracker

log = logs.get(__name__)

Clock = Callable[[], float]
# How long an open tracker on Redis keeps a completed count after its last completion.
OPEN_TRACKER_COUNT_TTL = 30 * 86400
PEER_THREADS = 8  # announces in flight to Redis at once, per replica


@dataclass
class RunningTracker:
    config: TrackerConfig
    stores: Stores
    peers: PeerStore
    tracker: Tracker
    registry: CollectorRegistry
    grpc: grpcserver.GrpcServer
    site: web.Site
    executor: ThreadPoolExecutor
    closing: list[Callable[[], None]]  # the stores' close, in order
    maintenance: asyncio.Task[None] | None = None
    refreshing: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return self.site.local_url

    @property
    def announce_url(self) -> str:
        return f"{self.http_url}/announce"

    @property
    def grpc_target(self) -> str:
        return grpcserver.host_port(self.config.grpc_bind, self.grpc.port)

    async def _in_store(self, fn: Callable[[], object]) -> bool:
        """Runs a store call in a store thread; records the store's health; False if down."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, fn)
        except StoreUnavailable as exc:
            self.stores.health.failed(Component.INDEX, str(exc))
            return False
        self.stores.health.ok(Component.INDEX)
        return True

    async def maintain(self) -> None:
        """Forgets silent peers and expired edges (periodically, or when a test says so)."""
        self.tracker.expire()
        await self._in_store(self.stores.registry.expire)

    async def refresh(self) -> bool:
        """Catches up with the shared store (periodically, or when a test says so); whether
        the store answered. The gRPC health of the index and registry services follows: NOT
        SERVING while their store is unreachable (readiness), SERVING again when it answers."""
        answered = await self._in_store(self._refresh_stores)
        serving = self.stores.health.up(Component.INDEX)
        for name in (index_service.SERVICE_NAME, registry_service.SERVICE_NAME):
            await self.grpc.set_serving(name, serving)
        return answered

    def _refresh_stores(self) -> None:
        self.stores.index.refresh()
        self.stores.registry.refresh()

    async def _maintain_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.maintain()
            except Exception:
                log.exception("tracker_maintenance_failed")

    async def _refresh_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except Exception:
                log.exception("store_refresh_failed")

    async def stop(self, grace: float = 2.0) -> None:
        for task in (self.maintenance, self.refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.site.stop()
        await self.grpc.stop(grace)
        self.executor.shutdown(wait=True)
        for close in self.closing:
            close()


async def start(
    config: TrackerConfig,
    *,
    clock: Clock | None = None,
    stores: Stores | None = None,
    maintain_every: float | None = None,
) -> RunningTracker:
    """Starts the gRPC and HTTP servers; `clock` replaces both the wall and monotonic clocks.

    `maintain_every` None sweeps every min(60 s, peer_ttl / 4); 0 never (tests call maintain()).
    The stores are opened (and migrated) from the config unless given; they are closed by stop().
    """
    if stores is None:
        loop = asyncio.get_running_loop()
        opening = functools.partial(open_stores, config.store, config.db_path, clock or time.time)
        stores = await loop.run_in_executor(None, opening)
    # Only an open tracker counts completions of arbitrary infohashes, so only it caps them.
    limits = config.peer_limits()
    memory = MemoryPeerStore(
        config.peer_ttl,
        clock or time.monotonic,
        max_retired=MAX_RETIRED_COUNTS if config.open_tracker else None,
        limits=limits,
    )
    peers: PeerStore = memory
    closing: list[Callable[[], None]] = [stores.close]
    offload: ThreadPoolExecutor | None = None
    if config.peer_store:
        # Shared swarms; this process's memory only answers while Redis cannot.
        redis_peers = RedisPeerStore(
            config.peer_store,
            config.peer_ttl,
            stores.health,
            memory,
            clock or time.time,
            limits=limits,
            count_ttl=OPEN_TRACKER_COUNT_TTL if config.open_tracker else 0,
        )
        peers = redis_peers
        # Announces wait on Redis: threads overlap the waits instead of stalling the loop.
        offload = ThreadPoolExecutor(max_workers=PEER_THREADS, thread_name_prefix="tracker-peers")
        closing += [functools.partial(offload.shutdown, wait=True), redis_peers.close]
    registry = new_registry("tracker")
    metrics = TrackerMetrics(registry, peers, stores, limits)
    policy = Policy(
        config.announce_interval,
        config.min_interval,
        config.numwant_default,
        config.numwant_max,
        seed_interval=config.seed_announce_interval or config.announce_interval,
    )
    index = stores.index
    tracker = Tracker(
        peers,
        None if config.open_tracker else index.is_tracked,
        policy,
        metrics,
        is_registered=stores.registry.is_registered_address,
    )
    executor = ThreadPoolExecutor(max_workers=stores.threads, thread_name_prefix="tracker-store")
    servicers = [
        grpcserver.Servicer(
            index_service.SERVICE_NAME,
            index_pb2_grpc.add_IndexServiceServicer_to_server,
            index_service.IndexServicer(
                index,
                executor,
                stores.health,
                token=config.publish_token,
                max_batch=config.max_batch,
            ),
            index_service.request_bounds(config.max_batch),
        ),
        grpcserver.Servicer(
            registry_service.SERVICE_NAME,
            registry_pb2_grpc.add_EdgeRegistryServiceServicer_to_server,
            registry_service.RegistryServicer(
                stores.registry,
                executor,
                stores.health,
                token=config.publish_token,
                lease_seconds=config.edge_lease_seconds,
                peers_epoch=lambda: peers.epoch,
            ),
        ),
        grpcserver.Servicer(
            collection_service.SERVICE_NAME,
            collection_pb2_grpc.add_CollectionServiceServicer_to_server,
            collection_service.CollectionServicer(
                stores.collections,
                stores.registry,
                executor,
                stores.health,
                admin_token=config.admin_token,
                publish_token=config.publish_token,
            ),
            collection_service.REQUEST_BOUNDS,
        ),
        grpcserver.Servicer(
            status_service.SERVICE_NAME,
            status_pb2_grpc.add_MeshStatusServiceServicer_to_server,
            status_service.MeshStatusServicer(
                index,
                stores.registry,
                peers,
                executor,
                stores.health,
                lease_seconds=config.edge_lease_seconds,
                clock=clock or time.time,
            ),
        ),
    ]
    try:
        grpc_server = await grpcserver.start(config.grpc_bind, servicers, registry)
    except BaseException:
        executor.shutdown()
        for close in closing:
            close()
        raise
    try:
        frontend = http.Frontend(tracker, metrics, offload)
        site = await web.start(
            http.build_server(frontend, registry, stores.health),
            config.http_host,
            config.http_port,
            limits=web.ServerLimits(
                head_timeout=config.http_head_timeout, body_timeout=config.http_body_timeout
            ),
            bad_request=frontend.bad_request,
        )
    except BaseException:
        await grpc_server.stop(0)
        executor.shutdown()
        for close in closing:
            close()
        raise
    running = RunningTracker(
        config, stores, peers, tracker, registry, grpc_server, site, executor, closing
    )
    every = min(60.0, config.peer_ttl / 4) if maintain_every is None else maintain_every
    if every > 0:
        running.maintenance = asyncio.create_task(running._maintain_forever(every))
    if stores.shared:
        running.refreshing = asyncio.create_task(
            running._refresh_forever(config.store_refresh_interval)
        )
    return running
