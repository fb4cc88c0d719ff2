"""The edge's composition root: builds every part from an `EdgeConfig` and runs them.

Tests build the same objects through `Edge(config, ...)`, overriding parts
(the clock, the verifier, the metrics) by keyword. Port 0 for HTTP, gRPC and
BitTorrent picks free ports; `http_url`, `grpc_target` and `listen_port` say
which. With `tracker_grpc` set the edge gets the swarm side (libtorrent, the
tracker's index and registry); without it, it is a plain verifying cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aptmesh import grpcserver, logs, web
from aptmesh.v1 import edge_pb2_grpc
from aptmesh_edge.cache import BlobStore, IndexStore, PathIndex
from aptmesh_edge.config import EdgeConfig
from aptmesh_edge.files import FileService
from aptmesh_edge.grpcapi import REQUEST_BOUNDS, SERVICE_NAME, EdgeServicer
from aptmesh_edge.http import EdgeHttp
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import EdgeInfo, SiteFetch
from aptmesh_edge.trust import ReleaseVerifier
from aptmesh_edge.upstream import UpstreamClient
from aptmesh_edge.urls import Resource, UrlError, parse_target, parse_upstreams
from aptmesh_edge.verify import NullVerifier, Verifier

if TYPE_CHECKING:  # libtorrent and the tracker's client load only for edges with a swarm
    from aptmesh_edge.swarmfetch import EdgeSwarm
    from aptmesh_tracker.client import TrackerClient

log = logs.get(__name__)

METRICS_EVERY = 2.0  # seconds between swarm statistics updates
EDGES_EVERY = 10.0  # seconds between refreshes of the edge list
# A list not refreshed for this long (the tracker is unreachable) no longer routes small files
# through other edges.
EDGES_STALE_AFTER = 3 * EDGES_EVERY


def make_verifier(config: EdgeConfig) -> Verifier:
    if config.verify_mode == "off":
        return NullVerifier()
    return ReleaseVerifier(config.keyring, config.verify_mode)


def reported_upload_capacity(config: EdgeConfig) -> int:
    """The uplink the registry hears of: the configured capacity or the upload cap (the link a
    limited edge can fill), the lower if both are set; 0: unknown."""
    known = [v for v in (config.upload_capacity, config.upload_rate_limit) if v > 0]
    return min(known) if known else 0


class Edge:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        metrics: EdgeMetrics | None = None,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics or EdgeMetrics()
        self.upstreams = parse_upstreams(config.upstreams)
        root = config.cache_dir
        self.blobs = BlobStore(
            root,
            config.cache_max_bytes,
            config.memory_cache_bytes,
            config.memory_file_max_bytes,
            on_evict=self._evicted,
        )
        self.paths = PathIndex(root)
        self.indexes = IndexStore(root)
        self.upstream = UpstreamClient(self.metrics, config.upstream_timeout)
        # Small files through the zone's owner edge: only with a registry to list the edges.
        self.site_fetch = (
            SiteFetch(
                self.metrics,
                zone=config.zone,
                read_timeout=config.upstream_timeout,
                stale_after=EDGES_STALE_AFTER,
            )
            if config.site_fetch and config.tracker_grpc
            else None
        )
        self.files = FileService(
            blobs=self.blobs,
            paths=self.paths,
            indexes=self.indexes,
            upstream=self.upstream,
            verifier=verifier or make_verifier(config),
            metrics=self.metrics,
            freeze_seconds=config.index_freeze_seconds,
            swarm_min_size=config.swarm_min_size,
            site=self.site_fetch,
            clock=clock,
        )
        # The live edges as the registry last listed them (this one among them, once registered).
        self.listed_edges: list[EdgeInfo] = []
        self.http = EdgeHttp(
            upstreams=self.upstreams,
            files=self.files,
            metrics=self.metrics,
            edges=self._edges,
            ready=lambda: self._ready,
        )
        self._ready = False
        self._site: web.Site | None = None
        self._grpc: grpcserver.GrpcServer | None = None
        self._tracker: TrackerClient | None = None
        self.swarm_side: EdgeSwarm | None = None
        self._loops: list[asyncio.Task[None]] = []

    # -- identity -----------------------------------------------------------------

    @property
    def http_url(self) -> str:
        assert self._site is not None, "the edge is not started"
        return self._site.local_url

    @property
    def http_site(self) -> web.Site | None:
        return self._site

    @property
    def grpc_target(self) -> str:
        assert self._grpc is not None, "the edge is not started"
        return grpcserver.host_port(self.config.grpc_bind, self._grpc.port)

    def public_url(self) -> str:
        return (self.config.public_url or self.http_url).rstrip("/")

    def edge_id(self) -> str:
        """The registry id: configured, or the public URL's host:port (ids hold no '/')."""
        return self.config.edge_id or urlsplit(self.public_url()).netloc or socket.gethostname()

    async def _edges(self) -> list[EdgeInfo]:
        me = EdgeInfo(self.edge_id(), self.public_url(), self.config.zone)
        return [me, *(e for e in self.listed_edges if e.id != me.id)]

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._open_stores)
        self.files.update_gauges()
        await self.upstream.start()
        if self.site_fetch is not None:
            await self.site_fetch.start()
        learned = await self.files.warm(self._resolve_url)
        log.info("indexes_loaded", verified=learned)
        self._site = await web.start(
            self.http.server(), self.config.http_host, self.config.http_port
        )
        servicer = EdgeServicer(
            self.files, self.blobs, self.upstreams, admin_token=self.config.admin_token
        )
        self._grpc = await grpcserver.start(
            self.config.grpc_bind,
            [
                grpcserver.Servicer(
                    SERVICE_NAME,
                    edge_pb2_grpc.add_EdgeServiceServicer_to_server,
                    servicer,
                    REQUEST_BOUNDS,
                )
            ],
            self.metrics.registry,
        )
        if self.config.tracker_grpc:
            self._start_swarm()
        self._ready = True
        log.info(
            "edge_started",
            http=self.http_url,
            grpc=self.grpc_target,
            upstreams=self.upstreams.hosts(),
            swarm=bool(self.config.tracker_grpc),
        )

    def _start_swarm(self) -> None:
        # Imported here: libtorrent loads only for edges that use the swarm.
        from aptmesh.swarm import Swarm, SwarmSettings
        from aptmesh_edge.sources import WebSeedPolicy
        from aptmesh_edge.swarmfetch import EdgeSwarm
        from aptmesh_tracker.client import TrackerClient

        config = self.config
        tracker = TrackerClient(config.tracker_grpc, token=config.publish_token)
        swarm = Swarm(
            SwarmSettings(
                listen_host="0.0.0.0" if config.public_swarm else _listen_host(config.http_host),
                listen_port=config.listen_port,
                public=config.public_swarm,
                upload_rate_limit=config.upload_rate_limit,
                role="edge",
            )
        )
        side = EdgeSwarm(
            swarm,
            tracker,
            scratch_dir=config.cache_dir / "swarm",
            announce=config.tracker_announce,
            can_publish=bool(config.publish_token),
            extra_trackers=config.public_trackers if config.public_swarm else (),
            metrics=self.metrics,
            first_piece_timeout=config.swarm_timeout,
            stall_seconds=config.swarm_stall_seconds,
            self_url=self.public_url(),
            web_seed_policy=WebSeedPolicy(
                delay=config.swarm_webseed_delay,
                stall=config.swarm_webseed_stall_seconds,
                min_rate=config.swarm_webseed_min_rate,
            ),
        )
        side.open()
        self._tracker = tracker
        self.swarm_side = side
        self.files.swarm = side
        self._loops.append(asyncio.create_task(self._swarm_metrics(side)))
        self._loops.append(asyncio.create_task(self._list_edges()))
        if config.publish_token:
            self._loops.append(asyncio.create_task(self._register(tracker)))

    @property
    def listen_port(self) -> int:
        assert self.swarm_side is not None, "the edge has no swarm"
        return self.swarm_side.swarm.listen_port

    async def _swarm_metrics(self, side: EdgeSwarm) -> None:
        while True:
            side.update_metrics()
            await asyncio.sleep(METRICS_EVERY)

    async def _register(self, tracker: TrackerClient) -> None:
        from aptmesh_tracker.client import TrackerClientError, renew_after
        from aptmesh_tracker.records import Edge as EdgeRecord

        me = EdgeRecord(
            self.edge_id(),
            self.public_url(),
            self.config.zone,
            upload_capacity=reported_upload_capacity(self.config),
        )
        while True:
            try:
                lease = await tracker.register_edge(me)
                wait = renew_after(lease)
            except TrackerClientError as exc:
                log.warning("edge_registration_failed", error=str(exc))
                wait = 5.0
            await asyncio.sleep(wait)

    async def refresh_edges(self) -> None:
        """Reads the live edges from the tracker's registry (kept if it cannot be reached)."""
        from aptmesh_tracker.client import TrackerClientError

        if self._tracker is None:
            return
        try:
            site = await self._tracker.list_site(self.config.zone)
        except TrackerClientError as exc:
            log.info("edge_list_unavailable", error=str(exc))
            return
        self.listed_edges = [EdgeInfo(e.id, e.url, e.zone) for e in site.edges]
        if self.site_fetch is not None:
            self.site_fetch.set_edges(self.edge_id(), self.listed_edges)
        if self.swarm_side is not None:
            self.swarm_side.set_site(self.edge_id(), site.edges, site.seed_upload_capacity)

    async def _list_edges(self) -> None:
        while True:
            await self.refresh_edges()
            await asyncio.sleep(EDGES_EVERY)

    def _resolve_url(self, url: str) -> Resource | None:
        try:
            target = parse_target(url)
            return self.upstreams.resolve(target) if target is not None else None
        except UrlError:
            return None

    def _open_stores(self) -> None:
        self.blobs.open()
        self.paths.open(self.blobs)
        self.indexes.open()

    def _evicted(self, sha256: str) -> None:
        self.paths.forget_blob(sha256)
        if self.swarm_side is not None:
            self.swarm_side.evicted(sha256)

    async def stop(self) -> None:
        self._ready = False
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._grpc is not None:
            await self._grpc.stop(1.0)
            self._grpc = None
        await self.files.close()
        await self.upstream.close()
        if self.site_fetch is not None:
            await self.site_fetch.close()
        if self.swarm_side is not None:
            self.swarm_side.close()
            self.swarm_side.swarm.close()
            self.swarm_side = None
        if self._tracker is not None:
            await self._tracker.close()
            self._tracker = None


def _listen_host(http_host: str) -> str:
    return http_host if http_host not in {"", "::"} else "0.0.0.0"


async def run(config: EdgeConfig, stop: asyncio.Event) -> None:
    edge = Edge(config)
    await edge.start()
    try:
        await stop.wait()
    finally:
        await edge.stop()
