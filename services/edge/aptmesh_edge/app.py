"""The edge's composition root: `start(config, **collaborators) -> RunningEdge`.

`start` is what `main`, `aptmesh up` and the tests run: it builds every part
from an `EdgeConfig` (tests override the metrics, the verifier and the clock
by keyword), starts them, and returns a `RunningEdge` that knows where it
listens and how to stop. Port 0 for HTTP, gRPC and BitTorrent picks free
ports. Roles by wiring: with `tracker_grpc` set the package logic is given
the swarm side (libtorrent, the tracker's index and registry, loaded only
then) and, with `site_fetch`, the zone's other edges; without it, it is a
plain verifying cache and nothing imports libtorrent.

Restarts: `start` locks the cache directory first (a second edge on it would
wipe the first's temporary files), and readiness says when the directory is
gone or unwritable. `refresh_edges` watches the registry's `peers_epoch`:
when the tracker lost its swarms (restarted) or is back after an outage,
every torrent is announced again and the registration renewed at once
(`renew_now`), not at the announce interval and the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aptmesh import grpcserver, logs, web
from aptmesh.files import DirectoryLock, lock_directory, writable_directory
from aptmesh.uplink import known_uplink
from aptmesh.v1 import edge_pb2_grpc
from aptmesh_edge.cache import BlobStore, IndexStore, PathIndex
from aptmesh_edge.config import EdgeConfig
from aptmesh_edge.convergence import behind, reported
from aptmesh_edge.decisions import Outcome
from aptmesh_edge.files import FileService
from aptmesh_edge.grpcapi import REQUEST_BOUNDS, SERVICE_NAME, EdgeServicer
from aptmesh_edge.http import EdgeHttp, HttpBounds
from aptmesh_edge.indexes import IndexService
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.packages import PackageService
from aptmesh_edge.preheat import Preheater
from aptmesh_edge.site import EdgeInfo, SiteFetch
from aptmesh_edge.status import (
    DAY_MINUTES,
    HOUR_MINUTES,
    SAMPLE_EVERY,
    CollectionLine,
    EdgeLine,
    EdgeStatus,
    StatusView,
    SwarmLine,
    render,
)
from aptmesh_edge.trust import NullVerifier, ReleaseVerifier, Verifier, check_keyring
from aptmesh_edge.upstream import HttpSource, UpstreamClient
from aptmesh_edge.urls import Resource, Upstreams, UrlError, parse_target, parse_upstreams
from aptmesh_tracker.records import Edge as EdgeRecord

if TYPE_CHECKING:  # libtorrent and the tracker's client load only for edges with a swarm
    from aptmesh_edge.swarmfetch import EdgeSwarm
    from aptmesh_tracker.client import TrackerClient

log = logs.get(__name__)

# The newest generation verified per suite (trust.GenerationStore), kept across restarts.
GENERATIONS_FILE = "generations.json"
METRICS_EVERY = 2.0  # seconds between swarm statistics updates
EDGES_EVERY = 10.0  # seconds between refreshes of the edge list
# A list not refreshed for this long (the tracker is unreachable) no longer routes small files
# through other edges.
EDGES_STALE_AFTER = 3 * EDGES_EVERY


def make_verifier(config: EdgeConfig) -> Verifier:
    if config.verify_mode == "off":
        return NullVerifier()
    if config.verify_mode == "enforce" and config.keyring is not None:
        check_keyring(config.keyring)
    return ReleaseVerifier(
        config.keyring, config.verify_mode, state=config.cache_dir / GENERATIONS_FILE
    )


def wants_site_fetch(config: EdgeConfig) -> bool:
    """Small files through the zone's other edges: only with a registry to list the edges."""
    return config.site_fetch and bool(config.tracker_grpc)


@dataclass
class Membership:
    """Owns this edge's identity in the registry (id, public URL, once it listens) and the live
    edges as the registry last listed them (this one among them, once registered)."""

    config: EdgeConfig
    http_url: str = ""
    listed: list[EdgeInfo] = field(default_factory=list)

    def public_url(self) -> str:
        return (self.config.public_url or self.http_url).rstrip("/")

    def edge_id(self) -> str:
        """The registry id: configured, or the public URL's host:port (ids hold no '/')."""
        return self.config.edge_id or urlsplit(self.public_url()).netloc or socket.gethostname()

    def me(self) -> EdgeInfo:
        return EdgeInfo(self.edge_id(), self.public_url(), self.config.zone)

    async def edges(self) -> list[EdgeInfo]:
        me = self.me()
        return [me, *(e for e in self.listed if e.id != me.id)]


@dataclass
class RunningEdge:
    """Owns a started edge: its parts, its servers and its background loops."""

    config: EdgeConfig
    metrics: EdgeMetrics
    upstreams: Upstreams
    blobs: BlobStore
    paths: PathIndex
    indexes: IndexStore
    upstream: UpstreamClient
    files: FileService
    membership: Membership
    http_site: web.Site
    grpc: grpcserver.GrpcServer
    site_fetch: SiteFetch | None = None
    preheater: Preheater | None = None
    swarm_side: EdgeSwarm | None = None
    tracker: TrackerClient | None = None
    loops: list[asyncio.Task[None]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lock: DirectoryLock | None = None
    renew_now: asyncio.Event = field(default_factory=asyncio.Event)  # register again at once
    # The registry's peers_epoch as last read; None before the first read or after a failed one.
    peers_epoch: str | None = None
    registry_lost: bool = False  # a read failed since the last one that worked
    listed_at: float | None = None  # wall clock of the last edge list read from the registry
    verifier: Verifier | None = None
    status: EdgeStatus | None = None
    clock: Callable[[], float] = time.time

    @property
    def http_url(self) -> str:
        return self.http_site.local_url

    @property
    def grpc_target(self) -> str:
        return grpcserver.host_port(self.config.grpc_bind, self.grpc.port)

    @property
    def listen_port(self) -> int:
        if self.swarm_side is None:
            raise RuntimeError("the edge has no swarm")
        return self.swarm_side.swarm.listen_port

    @property
    def listed_edges(self) -> list[EdgeInfo]:
        return self.membership.listed

    def public_url(self) -> str:
        return self.membership.public_url()

    def edge_id(self) -> str:
        return self.membership.edge_id()

    async def refresh_edges(self) -> None:
        """Reads the live edges from the tracker's registry (kept if it cannot be reached)."""
        from aptmesh_tracker.client import TrackerClientError

        if self.tracker is None:
            return
        try:
            site = await self.tracker.list_site(self.config.zone)
        except TrackerClientError as exc:
            log.info("edge_list_unavailable", error=str(exc))
            self.registry_lost = True
            return
        self._follow_epoch(site.peers_epoch)
        self.listed_at = self.clock()
        self.membership.listed = [EdgeInfo(e.id, e.url, e.zone) for e in site.edges]
        if self.site_fetch is not None:
            self.site_fetch.set_edges(self.edge_id(), self.membership.listed)
        if self.swarm_side is not None:
            self.swarm_side.set_site(self.edge_id(), site.edges, site.seed_upload_capacity)
        await self._converge(site.edges)

    async def _converge(self, edges: list[EdgeRecord]) -> None:
        """Revalidates at once each suite another edge of the zone serves newer
        (aptmesh_edge.convergence); one InRelease request per suite behind."""
        served = self.files.indexes.verifier.served()
        for one in behind(served, self.edge_id(), self.config.zone, edges):
            log.info("generation_behind_zone", suite=one.suite, key=one.release.key)
            self.metrics.zone_revalidations.inc()
            await self.files.indexes.revalidate(one.release)

    def _follow_epoch(self, epoch: str) -> None:
        """Announces every torrent again and renews the registration when the tracker lost its
        swarms (a new epoch) or is back after an outage."""
        changed = self.peers_epoch is not None and epoch != self.peers_epoch
        if changed or self.registry_lost:
            torrents = self.swarm_side.swarm.reannounce() if self.swarm_side is not None else 0
            self.renew_now.set()
            log.info(
                "swarms_reannounced",
                torrents=torrents,
                reason="tracker_restarted" if changed else "tracker_back",
            )
        self.peers_epoch, self.registry_lost = epoch, False

    def status_view(self) -> StatusView:
        """What the status page shows now (samples the counters first)."""
        if self.status is None:
            raise RuntimeError("the edge keeps no status")
        status, now = self.status, self.clock()
        status.sample()
        served = status.served.history
        stats = self.blobs.stats()
        return StatusView(
            edge_id=self.edge_id(),
            zone=self.config.zone,
            public_url=self.public_url(),
            upstream_hosts=self.upstreams.hosts(),
            served_total=status.served_total,
            served_hour=served.totals(HOUR_MINUTES),
            served_day=served.totals(DAY_MINUTES),
            served_hour_series=served.series(HOUR_MINUTES, 1),
            served_day_series=served.series(DAY_MINUTES, 30),
            requests=_requests_by_outcome(self.metrics),
            cache_size=stats.size_bytes,
            cache_limit=stats.limit_bytes,
            cache_entries=stats.entries,
            fallbacks_hour=status.fallbacks.history.totals(HOUR_MINUTES),
            recent_fallbacks=self.metrics.recent_fallbacks.recent(),
            edges=self._edge_lines(now),
            registry=self._registry_line(now),
            swarm=self._swarm_line(),
            generations=[
                (suite, g.date) for suite, g in (self.verifier or NullVerifier()).generations()
            ],
            collections=[
                CollectionLine(
                    s.collection,
                    s.version,
                    s.files_wanted,
                    s.files_present,
                    s.bytes_wanted,
                    s.bytes_present,
                    s.errors,
                )
                for s in (self.preheater.statuses() if self.preheater is not None else [])
            ],
        )

    def _registry_line(self, now: float) -> str:
        if self.tracker is None:
            return ""
        if self.listed_at is None:
            return "not read yet"
        state = "unreachable since the last read" if self.registry_lost else "reachable"
        return f"{state}; edges last listed {now - self.listed_at:.0f} s ago"

    def _edge_lines(self, now: float) -> list[EdgeLine]:
        if self.tracker is None:
            return []
        me = self.membership.me()
        lines = [EdgeLine(me.id, me.url, me.zone, "this edge")]
        if self.listed_at is None:
            return lines
        age = now - self.listed_at
        health = (
            "live (registered)" if age <= EDGES_STALE_AFTER else f"unknown: list {age:.0f} s old"
        )
        lines += [
            EdgeLine(e.id, e.url, e.zone, health) for e in self.membership.listed if e.id != me.id
        ]
        return lines

    def _swarm_line(self) -> SwarmLine | None:
        side = self.swarm_side
        if side is None:
            return None
        stats = side.swarm.stats()
        seeds = sum(t.transfer().seeds for t in list(side.downloading.values()))
        return SwarmLine(
            stats.torrents, stats.peers, len(side.downloading), len(side.seeding), seeds
        )

    def status_page(self) -> str:
        return render(self.status_view(), self.clock())

    def cache_problem(self) -> str | None:
        """None while the cache directory is there and writable, else what is wrong."""
        return writable_directory(self.config.cache_dir)

    async def stop(self) -> None:
        self.ready.clear()
        for task in self.loops:
            task.cancel()
        for task in self.loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.loops.clear()
        await self.http_site.stop()
        await self.grpc.stop(1.0)
        await self.files.close()
        await self.upstream.close()
        if self.site_fetch is not None:
            await self.site_fetch.close()
        if self.swarm_side is not None:
            self.swarm_side.close()
            self.swarm_side.swarm.close()
            self.swarm_side = None
        if self.tracker is not None:
            await self.tracker.close()
            self.tracker = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


async def start(
    config: EdgeConfig,
    *,
    metrics: EdgeMetrics | None = None,
    verifier: Verifier | None = None,
    clock: Callable[[], float] = time.time,
) -> RunningEdge:
    """Builds and starts an edge; on failure, what was started is stopped again."""
    metrics = metrics or EdgeMetrics(clock=clock)
    upstreams = parse_upstreams(config.upstreams, config.allowed_hosts)
    membership = Membership(config)
    async with contextlib.AsyncExitStack() as undo:
        lock = lock_directory(config.cache_dir, "edge cache directory")
        undo.callback(lock.release)
        tracker, swarm_side = _swarm_side(config, metrics, membership.public_url)
        if tracker is not None:
            undo.push_async_callback(tracker.close)
        if swarm_side is not None:
            undo.callback(swarm_side.swarm.close)
        paths = PathIndex(config.cache_dir)

        def evicted(sha256: str) -> None:
            paths.forget_blob(sha256)
            if swarm_side is not None:
                swarm_side.evicted(sha256)

        blobs = BlobStore(
            config.cache_dir,
            config.cache_max_bytes,
            config.memory_cache_bytes,
            config.memory_file_max_bytes,
            on_evict=evicted,
        )
        indexes = IndexStore(config.cache_dir)
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_open_stores, blobs, paths, indexes)
        metrics.show_cache(blobs.stats())
        upstream = UpstreamClient(metrics, config.upstream_timeout, ca_file=config.upstream_ca_file)
        await upstream.start()
        undo.push_async_callback(upstream.close)
        site_fetch = None
        if wants_site_fetch(config):
            site_fetch = SiteFetch(
                metrics,
                zone=config.zone,
                read_timeout=config.upstream_timeout,
                stale_after=EDGES_STALE_AFTER,
            )
            await site_fetch.start()
            undo.push_async_callback(site_fetch.close)
        http_source = HttpSource(upstream, config.edge_backends)
        verifier = verifier or make_verifier(config)
        index_service = IndexService(
            blobs=blobs,
            indexes=indexes,
            source=http_source,
            verifier=verifier,
            metrics=metrics,
            freeze_seconds=config.index_freeze_seconds,
            clock=clock,
        )
        packages = PackageService(
            blobs=blobs,
            paths=paths,
            upstream=upstream,
            http=http_source,
            verifier=verifier,
            metrics=metrics,
            swarm_min_size=config.swarm_min_size,
            swarm=swarm_side,
            site=site_fetch,
        )
        files = FileService(index_service, packages, blobs, metrics)
        undo.push_async_callback(files.close)
        learned = await index_service.warm(lambda url: _resolve_url(upstreams, url))
        log.info("indexes_loaded", verified=learned)
        preheater = _preheater(config, files, blobs, upstreams, tracker, metrics, membership, clock)
        ready = asyncio.Event()

        def is_ready() -> bool:
            # Trust problems found after start-up (a keyring gone unreadable) make it unready.
            if verifier.trust_problem() is not None:
                return False
            if not ready.is_set():
                return False
            problem = writable_directory(config.cache_dir)
            if problem is not None:
                log.warning("cache_dir_unusable", error=problem)
            return problem is None

        started: list[RunningEdge] = []  # the status page needs the whole edge, made below

        def status_page() -> str:
            if not started:
                return "<!DOCTYPE html><title>aptmesh edge</title><p>starting</p>"
            return started[0].status_page()

        http = EdgeHttp(
            status_page=status_page,
            upstreams=upstreams,
            files=files,
            metrics=metrics,
            edges=membership.edges,
            bounds=HttpBounds.from_config(config),
            ready=is_ready,
            collections=preheater,
        )
        http_site = await web.start(
            http.server(),
            config.http_host,
            config.http_port,
            limits=http.bounds.server_limits(),
            bad_request=http.bad_request,
            handler=http.connection_class(),
        )
        undo.push_async_callback(http_site.stop)
        membership.http_url = http_site.local_url
        servicer = EdgeServicer(files, blobs, upstreams, admin_token=config.admin_token)
        grpc = await grpcserver.start(
            config.grpc_bind,
            [
                grpcserver.Servicer(
                    SERVICE_NAME,
                    edge_pb2_grpc.add_EdgeServiceServicer_to_server,
                    servicer,
                    REQUEST_BOUNDS,
                )
            ],
            metrics.registry,
        )
        undo.pop_all()
    status = EdgeStatus(metrics.served_bytes, metrics.fallbacks, clock)
    running = RunningEdge(
        config=config,
        metrics=metrics,
        upstreams=upstreams,
        blobs=blobs,
        paths=paths,
        indexes=indexes,
        upstream=upstream,
        files=files,
        membership=membership,
        http_site=http_site,
        grpc=grpc,
        site_fetch=site_fetch,
        preheater=preheater,
        swarm_side=swarm_side,
        tracker=tracker,
        ready=ready,
        lock=lock,
        verifier=verifier,
        status=status,
        clock=clock,
    )
    started.append(running)
    running.loops.append(asyncio.create_task(_sample_status(status)))
    if isinstance(verifier, ReleaseVerifier):
        verifier.on_new_generation = running.renew_now.set
    if swarm_side is not None and tracker is not None:
        swarm_side.open()
        running.loops.append(asyncio.create_task(_swarm_metrics(swarm_side)))
        running.loops.append(asyncio.create_task(_list_edges(running)))
        if config.publish_token:
            running.loops.append(
                asyncio.create_task(_register(tracker, membership, running.renew_now, verifier))
            )
    if preheater is not None and config.collection_poll_seconds > 0:
        every = config.collection_poll_seconds
        running.loops.append(asyncio.create_task(preheater.run_forever(every)))
    ready.set()
    log.info(
        "edge_started",
        http=running.http_url,
        grpc=running.grpc_target,
        upstreams=upstreams.hosts(),
        swarm=swarm_side is not None,
    )
    return running


def _swarm_side(
    config: EdgeConfig, metrics: EdgeMetrics, public_url: Callable[[], str]
) -> tuple[TrackerClient | None, EdgeSwarm | None]:
    """The tracker's client and the swarm side, for an edge given a tracker (else neither)."""
    if not config.tracker_grpc:
        return None, None
    # Imported here: libtorrent loads only for edges that use the swarm.
    from aptmesh.swarm import PIECE_FAILURE_KIND, Swarm, SwarmSettings
    from aptmesh_edge.sources import WebSeedPolicy
    from aptmesh_edge.swarmfetch import EdgeSwarm
    from aptmesh_tracker.client import TrackerClient

    tracker = TrackerClient(config.tracker_grpc, token=config.publish_token)
    swarm = Swarm(
        SwarmSettings(
            listen_host="0.0.0.0" if config.public_swarm else _listen_host(config.http_host),
            listen_port=config.listen_port,
            public=config.public_swarm,
            upload_rate_limit=config.upload_rate_limit,
            role="edge",
        ),
        on_hash_failed=lambda _: metrics.verification_failures.labels(
            service="edge", kind=PIECE_FAILURE_KIND
        ).inc(),
    )
    side = EdgeSwarm(
        swarm,
        tracker,
        scratch_dir=config.cache_dir / "swarm",
        announce=config.tracker_announce,
        can_publish=bool(config.publish_token),
        extra_trackers=config.public_trackers if config.public_swarm else (),
        metrics=metrics,
        first_piece_timeout=config.swarm_timeout,
        stall_seconds=config.swarm_stall_seconds,
        self_url=public_url,
        web_seed_policy=WebSeedPolicy(
            delay=config.swarm_webseed_delay,
            stall=config.swarm_webseed_stall_seconds,
            min_rate=config.swarm_webseed_min_rate,
        ),
    )
    return tracker, side


def _preheater(
    config: EdgeConfig,
    files: FileService,
    blobs: BlobStore,
    upstreams: Upstreams,
    tracker: TrackerClient | None,
    metrics: EdgeMetrics,
    membership: Membership,
    clock: Callable[[], float],
) -> Preheater | None:
    """The collections of this edge's zone (only with a tracker to read them from)."""
    if tracker is None:
        return None
    return Preheater(
        files=files,
        blobs=blobs,
        upstreams=upstreams,
        tracker=tracker,
        metrics=metrics,
        keyring=config.keyring,
        zone=config.zone,
        edge_id=membership.edge_id,
        clock=clock,
        grace_seconds=config.collection_grace_seconds,
        concurrency=config.collection_concurrency,
        report=bool(config.publish_token),
        state_dir=config.cache_dir,
    )


def reported_upload_capacity(config: EdgeConfig) -> int:
    """The uplink the registry hears of (`aptmesh.uplink.known_uplink`); its swarm is not given
    it: an edge's request queue is libtorrent's."""
    return known_uplink(config.upload_capacity, config.upload_rate_limit)


async def _swarm_metrics(side: EdgeSwarm) -> None:
    while True:
        side.update_metrics()
        await asyncio.sleep(METRICS_EVERY)


async def _sample_status(status: EdgeStatus) -> None:
    """Minutes without a visit still land in the history."""
    while True:
        await asyncio.sleep(SAMPLE_EVERY)
        status.sample()


def _requests_by_outcome(metrics: EdgeMetrics) -> dict[Outcome, int]:
    """Requests answered since start, by cache outcome (every file class summed)."""
    out: dict[Outcome, int] = {}
    for family in metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = Outcome(sample.labels["cache"])
                out[outcome] = out.get(outcome, 0) + int(sample.value)
    return out


async def _register(
    tracker: TrackerClient, membership: Membership, renew_now: asyncio.Event, verifier: Verifier
) -> None:
    """Registers and renews for as long as the edge runs; `renew_now` renews at once (a new
    generation verified, a tracker back). Each registration carries the generations served."""
    from aptmesh_tracker.client import TrackerClientError, renew_after

    config = membership.config
    while True:
        me = EdgeRecord(
            membership.edge_id(),
            membership.public_url(),
            config.zone,
            upload_capacity=reported_upload_capacity(config),
            generations=reported(verifier.served()),
        )
        try:
            lease = await tracker.register_edge(me)
            wait = renew_after(lease)
        except TrackerClientError as exc:
            log.warning("edge_registration_failed", error=str(exc))
            wait = 5.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(renew_now.wait(), wait)
        renew_now.clear()


async def _list_edges(edge: RunningEdge) -> None:
    while True:
        await edge.refresh_edges()
        await asyncio.sleep(EDGES_EVERY)


def _resolve_url(upstreams: Upstreams, url: str) -> Resource | None:
    try:
        target = parse_target(url)
        return upstreams.resolve(target) if target is not None else None
    except UrlError:
        return None


def _open_stores(blobs: BlobStore, paths: PathIndex, indexes: IndexStore) -> None:
    blobs.open()
    paths.open(blobs)
    indexes.open()


def _listen_host(http_host: str) -> str:
    return http_host if http_host not in {"", "::"} else "0.0.0.0"


async def run(config: EdgeConfig, stop: asyncio.Event) -> None:
    edge = await start(config)
    try:
        await stop.wait()
    finally:
        await edge.stop()
