"""The seeder's composition root: builds every collaborator from a config and runs them.

`start()` is what `main` runs and what tests run (port 0, a temporary data
directory, a fake clock, a fake or real index); it returns a `RunningSeeder`
that knows where it listens and how to stop. `once()` is `aptmesh seeder
--once`: the same sync without a BitTorrent session or servers. A running
seeder that knows its uplink registers itself in the tracker's edge registry
as a seed box (`seed_box_of`, `register_seed_box`); `--once` never does.

Restarts of its own and of the tracker: `build` locks the data directory
(a second process on it would share its state and files), `start` re-hashes
the held files in the background (`SeedBox.reverify`), and `watch_tracker`
looks at the registry every few seconds: when the tracker's `peers_epoch`
changes (it restarted and lost its swarms) or the tracker is back after an
outage, every torrent is announced again and the seed box registration is
renewed at once, so the swarms are whole again within seconds, not at the
30-minute announce interval or the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from aptmesh import grpcserver, logs, web
from aptmesh.config import ConfigError
from aptmesh.files import DirectoryLock, lock_directory
from aptmesh.metrics import new_registry
from aptmesh.swarm import PIECE_FAILURE_KIND, Swarm, SwarmSettings, SwarmTorrent
from aptmesh.uplink import known_uplink
from aptmesh.v1 import seeder_pb2_grpc
from aptmesh_seeder import http, service
from aptmesh_seeder.config import RepositorySpec, SeederConfig
from aptmesh_seeder.metrics import SeederMetrics
from aptmesh_seeder.progress import NullProgress, Progress
from aptmesh_seeder.publish import (
    NoPublisher,
    Publisher,
    PublishError,
    SiteView,
    TrackerPublisher,
)
from aptmesh_seeder.seedbox import SeedBox
from aptmesh_seeder.seeding import NoSeeding, Seeding, SwarmSeeding
from aptmesh_seeder.select import Policy
from aptmesh_seeder.sources import HttpSource, MirrorSource, OnBytes, Source
from aptmesh_seeder.state import State
from aptmesh_seeder.sync import RepositorySync, SyncContext, SyncResult
from aptmesh_tracker.client import TrackerClient, renew_after
from aptmesh_tracker.records import Edge

log = logs.get(__name__)

Clock = Callable[[], float]
STATE_FILE = "state.sqlite3"
SITE_EVERY = 5.0  # seconds between looks at the edge registry (`watch_tracker`)
REGISTER_RETRY = 5.0  # seconds before a failed seed box registration is tried again


def check_runnable(config: SeederConfig) -> tuple[RepositorySpec, ...]:
    """What `--print-config` does not need but a run does: repositories and their keyrings."""
    specs = config.repository_specs()
    if not specs:
        raise ConfigError(
            "no repositories configured: give --repositories or APTMESH_SEEDER_REPOSITORIES"
        )
    for spec in specs:
        keyring = spec.keyring or config.keyring
        if keyring is None:
            raise ConfigError(
                f"repository {spec.name} has no keyring: give --keyring / "
                "APTMESH_SEEDER_KEYRING or keyring= in its spec"
            )
        if not keyring.is_file():
            raise ConfigError(f"keyring {keyring} of repository {spec.name} is not a file")
        if spec.is_mirror and not Path(spec.source).is_dir():
            raise ConfigError(f"local mirror {spec.source} of {spec.name} is not a directory")
    return specs


def make_source(spec: RepositorySpec, config: SeederConfig, on_bytes: OnBytes) -> Source:
    if spec.is_mirror:
        return MirrorSource(Path(spec.source), webseed=spec.webseed)
    return HttpSource(spec.source, timeout=config.upstream_timeout, on_bytes=on_bytes)


@dataclass
class Seeder:
    """Everything one seeder is made of, built but not yet serving."""

    config: SeederConfig
    state: State
    box: SeedBox
    registry: CollectorRegistry
    metrics: SeederMetrics
    seeding: Seeding
    publisher: Publisher
    sources: list[Source]
    swarm: Swarm | None = None
    owns_publisher: bool = False
    lock: DirectoryLock | None = None

    async def close(self) -> None:
        for source in self.sources:
            await source.close()
        if self.owns_publisher and isinstance(self.publisher, TrackerPublisher):
            await self.publisher.close()
        if self.swarm is not None:
            self.swarm.close()
        self.state.close()
        if self.lock is not None:
            self.lock.release()


def build(
    config: SeederConfig,
    *,
    clock: Clock = time.time,
    publisher: Publisher | None = None,
    seed: bool = True,
    progress: Progress | None = None,
) -> Seeder:
    """Builds a seeder; `seed=False` (for --once) runs no BitTorrent session."""
    check_runnable(config)
    lock = lock_directory(config.data_dir, "seeder data directory")
    try:
        return _build(config, lock, clock=clock, publisher=publisher, seed=seed, progress=progress)
    except BaseException:
        lock.release()
        raise


def _build(
    config: SeederConfig,
    lock: DirectoryLock,
    *,
    clock: Clock,
    publisher: Publisher | None,
    seed: bool,
    progress: Progress | None,
) -> Seeder:
    specs = config.repository_specs()
    # Partial downloads of a killed run: never trusted, never resumed.
    shutil.rmtree(config.data_dir / "tmp", ignore_errors=True)
    state = State(config.data_dir / STATE_FILE)
    box: SeedBox | None = None
    metrics: SeederMetrics | None = None

    def piece_failed(torrent: SwarmTorrent) -> None:
        # A seeded file's piece failed libtorrent's check: its bytes on disk changed.
        if metrics is not None:
            metrics.verification_failure(PIECE_FAILURE_KIND)
        sha = seeding.held_sha256(torrent) if isinstance(seeding, SwarmSeeding) else None
        if box is not None and sha is not None:
            box.recheck(sha)

    swarm: Swarm | None = None
    seeding: Seeding
    if seed:
        swarm = Swarm(
            SwarmSettings(
                listen_host=config.listen_host,
                listen_port=config.listen_port,
                public=config.public_swarm,
                utp=config.utp,
                upload_rate_limit=config.upload_rate_limit,
                upload_capacity=known_uplink(config.upload_capacity, config.upload_rate_limit),
                connections_limit=config.connections_limit,
                role="seeder",
            ),
            on_hash_failed=piece_failed,
        )
        seeding = SwarmSeeding(swarm, config.tracker_announce)
    else:
        seeding = NoSeeding()
    registry = new_registry("seeder")
    metrics = SeederMetrics(registry, [s.name for s in specs], seeding.stats)
    owns = publisher is None
    if publisher is None:
        if config.tracker_grpc:
            client = TrackerClient(config.tracker_grpc, token=config.publish_token)
            publisher = TrackerPublisher(client)
        else:
            log.warning("tracker_not_configured", hint="set tracker_grpc to publish to an index")
            publisher = NoPublisher()
    context = SyncContext(
        state=state,
        seeding=seeding,
        publisher=publisher,
        metrics=metrics,
        policy=Policy(
            min_size=config.swarm_min_size,
            include=config.include,
            exclude=config.exclude,
            sections=config.sections,
            budget_bytes=config.budget_bytes,
        ),
        data_dir=config.data_dir,
        keyring=config.keyring,
        clock=clock,
        concurrency=config.download_concurrency,
        progress=progress or NullProgress(),
    )
    sources = [make_source(spec, config, metrics.on_upstream_bytes) for spec in specs]
    syncs = [RepositorySync(spec, src, context) for spec, src in zip(specs, sources, strict=True)]
    box = SeedBox(
        syncs, context, grace_period=config.grace_period, poll_interval=config.poll_interval
    )
    return Seeder(
        config, state, box, registry, metrics, seeding, publisher, sources, swarm, owns, lock
    )


@dataclass
class RunningSeeder:
    seeder: Seeder
    grpc: grpcserver.GrpcServer
    site: web.Site
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    # Called with every round of sync results (a composition like `aptmesh up` reports them).
    watchers: list[Callable[[list[SyncResult]], None]] = field(default_factory=list)
    poller: asyncio.Task[None] | None = None
    site_watch: asyncio.Task[None] | None = None
    registration: asyncio.Task[None] | None = None
    reverifier: asyncio.Task[int] | None = None
    renew_now: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def box(self) -> SeedBox:
        return self.seeder.box

    @property
    def grpc_target(self) -> str:
        return grpcserver.host_port(self.seeder.config.grpc_bind, self.grpc.port)

    @property
    def http_url(self) -> str:
        return self.site.local_url

    @property
    def listen_port(self) -> int:
        return self.seeder.swarm.listen_port if self.seeder.swarm else 0

    async def stop(self, grace: float = 2.0) -> None:
        self.stop_event.set()
        for task in (self.poller, self.site_watch, self.registration, self.reverifier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.site.stop()
        await self.grpc.stop(grace)
        saved = await self.box.save_resume_data()
        log.info("seeder_stopped", resume_data_saved=saved)
        await self.seeder.close()


async def watch_tracker(
    swarm: Swarm,
    publisher: Publisher,
    metrics: SeederMetrics,
    every: float,
    *,
    renew_now: asyncio.Event,
) -> None:
    """Every `every` seconds, reads the registry (`Publisher.site`): an adaptive swarm's
    request-queue depth follows the live edges' uplinks (`Swarm.know_site`), and when the
    tracker lost its swarms (its `peers_epoch` changed) or is back after being unreachable,
    every torrent is announced again and the seed box registration renewed (`renew_now`).
    An unreachable registry leaves everything as it was."""
    known = -1
    epoch: str | None = None
    lost = False
    while True:
        view = await publisher.site()
        if view is None:
            lost = True
        else:
            if swarm.adaptive:
                _know_site(swarm, view, metrics, known)
                known = swarm.site_depth
            if lost or (epoch is not None and view.peers_epoch != epoch):
                torrents = swarm.reannounce()
                renew_now.set()
                log.info(
                    "swarms_reannounced",
                    torrents=torrents,
                    reason="tracker_back" if epoch == view.peers_epoch else "tracker_restarted",
                )
            epoch, lost = view.peers_epoch, False
        await asyncio.sleep(every)


def _know_site(swarm: Swarm, view: SiteView, metrics: SeederMetrics, known: int) -> None:
    metrics.site_edges.set(len(view.uplinks))
    depth = swarm.know_site(view.uplinks)
    if depth != known:
        log.info("site_learned", edges=len(view.uplinks), request_queue_depth=depth)


def seed_box_of(config: SeederConfig, swarm: Swarm | None) -> Edge | None:
    """The registry entry of a seeder that registers as a seed box: one that seeds (has a
    swarm), knows its uplink (`aptmesh.uplink.known_uplink`, given to its swarm) and has a
    tracker and a token to register with; None for any other. A seed box has no url: clients
    never fetch from it through the registry."""
    if swarm is None or not config.tracker_grpc or not config.publish_token:
        return None
    capacity = swarm.settings.upload_capacity
    if not capacity:
        return None
    return Edge(config.seed_box_id, "", upload_capacity=capacity, seed_box=True)


async def register_seed_box(
    publisher: Publisher,
    box: Edge,
    *,
    retry: float = REGISTER_RETRY,
    renew_now: asyncio.Event | None = None,
) -> None:
    """Registers the seed box and renews its lease for as long as the seeder runs (as an edge
    does); a failure is logged and tried again after `retry` seconds, and never stops the
    seeding. `renew_now` set renews at once (the tracker restarted)."""
    renew_now = renew_now or asyncio.Event()
    registered = False
    while True:
        try:
            lease = await publisher.register_seed_box(box)
        except PublishError as exc:
            log.warning("seed_box_registration_failed", error=str(exc))
            wait = retry
        else:
            if not registered:
                log.info(
                    "seed_box_registered",
                    seed_box_id=box.id,
                    upload_capacity=box.upload_capacity,
                    lease_seconds=lease,
                )
                registered = True
            wait = renew_after(lease)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(renew_now.wait(), wait)
        renew_now.clear()


async def start(
    config: SeederConfig,
    *,
    clock: Clock = time.time,
    publisher: Publisher | None = None,
    poll: bool = True,
    site_every: float = SITE_EVERY,
) -> RunningSeeder:
    """Builds, restores (re-seeds held files), serves, and (with `poll`) starts polling.

    Tests pass `poll=False` and call `running.box.sync()` themselves.
    """
    seeder = build(config, clock=clock, publisher=publisher)
    try:
        seeder.box.restore()
        servicer = service.SeederServicer(seeder.box, admin_token=config.admin_token)
        grpc_server = await grpcserver.start(
            config.grpc_bind,
            [
                grpcserver.Servicer(
                    service.SERVICE_NAME,
                    seeder_pb2_grpc.add_SeederServiceServicer_to_server,
                    servicer,
                )
            ],
            seeder.registry,
        )
    except BaseException:
        await seeder.close()
        raise
    try:
        site = await web.start(
            http.build_app(seeder.box, seeder.registry), config.http_host, config.http_port
        )
    except BaseException:
        await grpc_server.stop(0)
        await seeder.close()
        raise

    async def report(results: list[SyncResult]) -> None:
        await grpc_server.set_serving(service.SERVICE_NAME, seeder.box.healthy())
        for watch in running.watchers:
            watch(results)

    running = RunningSeeder(seeder, grpc_server, site)
    seeder.box.on_synced = report
    if poll:
        running.poller = asyncio.create_task(seeder.box.run(running.stop_event))
    if seeder.swarm is not None and not isinstance(seeder.publisher, NoPublisher):
        running.site_watch = asyncio.create_task(
            watch_tracker(
                seeder.swarm,
                seeder.publisher,
                seeder.metrics,
                site_every,
                renew_now=running.renew_now,
            )
        )
    box = seed_box_of(config, seeder.swarm)
    if box is not None:
        running.registration = asyncio.create_task(
            register_seed_box(seeder.publisher, box, renew_now=running.renew_now)
        )
    running.reverifier = asyncio.create_task(seeder.box.reverify(rate=config.reverify_rate))
    log.info(
        "seeder_started",
        grpc=running.grpc_target,
        http=running.http_url,
        bittorrent_port=running.listen_port,
        repositories=list(seeder.box.syncs),
    )
    return running


async def once(
    config: SeederConfig,
    *,
    clock: Clock = time.time,
    publisher: Publisher | None = None,
    progress: Progress | None = None,
) -> list[SyncResult]:
    """`aptmesh seeder --once`: one sync of every repository, no BitTorrent session."""
    seeder = build(config, clock=clock, publisher=publisher, seed=False, progress=progress)
    try:
        seeder.box.restore()
        return await seeder.box.sync()
    finally:
        await seeder.close()
