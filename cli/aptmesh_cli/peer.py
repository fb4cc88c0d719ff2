"""`aptmesh peer`: this machine's peer, a small edge in a single-machine profile;
`aptmesh peer status`: what it did, against the user's limits.

Composition (here, because only the CLI may use the edge and the peer together): the peer's
configuration and policy (`aptmesh_peer`) decide, the edge's `start()` builds the edge:

- apt's side is loopback only: HTTP on 127.0.0.1 (the proxy line and the `mesh+http`
  method find it), gRPC on 127.0.0.1 with a free port;
- upstreams are this machine's apt sources (or `--upstreams`), each fetched through the
  site's edges first when `--edges` names them (path prefix), then the mirror;
- a BitTorrent session only when the policy opens one and a tracker is given; an opted-out
  peer never has one, so it listens on no BitTorrent port at all;
- what apt downloaded is seeded where it lies (`seed_archives`): a .deb of apt's archive
  cache whose SHA-256 a verified index lists, under that pool name and size; a file apt
  cleaned stops being seeded at the next look;
- a governor loop every few seconds counts what was uploaded into the ledger (kept in the
  state dir), closes uploads (unchoke nobody) when the gate closes, and writes the status
  `aptmesh peer status` reads (STATE_DIR/status.json);
- systemd hears READY=1 once apt can be served (the unit is Type=notify).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from aptmesh import aptsources, lifecycle, logs, sdnotify
from aptmesh import config as aptconfig
from aptmesh_edge.app import RunningEdge, make_verifier, start
from aptmesh_edge.config import EdgeConfig
from aptmesh_edge.trust import Verifier
from aptmesh_peer import ledger as ledgers
from aptmesh_peer.archives import pool_name
from aptmesh_peer.config import PeerConfig
from aptmesh_peer.policy import (
    Limits,
    SeedDecision,
    SeedRecord,
    SwarmPlan,
    UploadLedger,
    seed_decision,
    swarm_plan,
    upload_gate,
)
from aptmesh_peer.status import PeerStatus, limits_summary, render

DESCRIPTION = (
    "this machine's peer: a small edge for apt on loopback that seeds what apt downloaded "
    "within the user's limits (or never, or on the LAN only); `aptmesh peer status` reports"
)
STATUS_FILE = "status.json"
GOVERN_EVERY = 5.0  # seconds between two looks at the upload counters
SCAN_EVERY = 12  # governor rounds between two looks at apt's archive cache (a minute)
log = logs.get(__name__)


def origins(sources: Sequence[aptsources.AptSource]) -> tuple[str, ...]:
    """`scheme://host[:port]` of each HTTP(S) apt source, once each, in apt's order."""
    seen: dict[str, None] = {}
    for source in sources:
        split = urlsplit(source.uri)
        if split.scheme in ("http", "https") and split.netloc:
            seen.setdefault(f"{split.scheme}://{split.netloc}", None)
    return tuple(seen)


def upstream_entries(upstreams: Sequence[str], edges: Sequence[str]) -> tuple[str, ...]:
    """The edge's upstream entries: HOST=EDGE/HOST|...|ORIGIN, the site's edges first (their
    path-prefix form), the origin itself last; without edges, the origins as they are."""
    if not edges:
        return tuple(upstreams)
    entries = []
    for origin in upstreams:
        split = urlsplit(origin)
        via = [
            f"{edge.rstrip('/')}/{'HTTPS///' if split.scheme == 'https' else ''}{split.netloc}"
            for edge in edges
        ]
        entries.append(f"{split.netloc}={'|'.join([*via, origin])}")
    return tuple(entries)


def edge_config(config: PeerConfig, plan: SwarmPlan, upstreams: Sequence[str]) -> EdgeConfig:
    swarm = plan.enabled and bool(config.tracker_grpc)
    return EdgeConfig(
        http_host="127.0.0.1",
        http_port=config.http_port,
        grpc_bind="127.0.0.1:0",
        cache_dir=config.cache_dir,
        cache_max_bytes=config.cache_max_bytes,
        upstreams=upstream_entries(upstreams, config.edges),
        edge_backends=config.edges,
        keyring=config.keyring,
        verify_mode="enforce",
        site_fetch=False,
        tracker_grpc=config.tracker_grpc if swarm else "",
        tracker_announce=(config.tracker_announce,) if swarm and config.tracker_announce else (),
        listen_port=config.listen_port,
        public_swarm=plan.public,
        upload_rate_limit=plan.upload_rate_limit,
        log_level=config.log_level,
        log_format=config.log_format,
    )


@dataclass
class RunningPeer:
    """A started peer: its edge, the limits it keeps, the governor that keeps them."""

    config: PeerConfig
    limits: Limits
    plan: SwarmPlan
    edge: RunningEdge
    verifier: Verifier
    clock: Callable[[], datetime]
    ledger: UploadLedger = field(default_factory=UploadLedger)
    uploaded_seen: int = 0
    uploads_open: bool | None = None
    task: asyncio.Task[None] | None = None
    stopped: bool = False
    hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)
    archived: dict[str, Path] = field(default_factory=dict)  # seeded from apt's cache
    seeded_since: dict[str, datetime] = field(default_factory=dict)
    retired: set[str] = field(default_factory=set)  # reached their ratio or seed time
    reached: bool = False  # a peer has dialled this session since it started

    def _served(self, source: str) -> int:
        value = self.edge.metrics.registry.get_sample_value(
            "aptmesh_edge_served_bytes_total", {"source": source}
        )
        return int(value or 0)

    def govern(self) -> PeerStatus:
        """One look: count new uploads, open or close uploading, write the status."""
        now = self.clock()
        side = self.edge.swarm_side
        if side is not None:
            uploaded = side.swarm.stats().payload_uploaded_bytes
            self.ledger = self.ledger.record(max(0, uploaded - self.uploaded_seen), now)
            self.uploaded_seen = uploaded
            ledgers.save(self.config.state_dir, self.ledger)
            self.retire(now)
            self.reached = self.reached or side.swarm.incoming_peers() > 0
        gate = upload_gate(self.limits, self.ledger, now)
        if side is not None and self.plan.uploads and gate.open != self.uploads_open:
            side.swarm.apply(**self.plan.upload_switch(gate.open))
            log.info("uploads_changed", open=gate.open, reason=gate.state.value)
        self.uploads_open = gate.open
        ledger = self.ledger.at(now)
        status = PeerStatus(
            participation=self.limits.participation.value,
            profile=self.limits.profile.value,
            from_peers_bytes=self._served("swarm"),
            from_edges_bytes=self._served("edge"),
            from_mirror_bytes=self._served("upstream"),
            uploaded_today_bytes=ledger.day_bytes,
            uploaded_month_bytes=ledger.month_bytes,
            uploaded_total_bytes=ledger.total_bytes,
            gate=gate.state.value,
            seeding=len(side.swarm.torrents()) if side is not None else 0,
            listening=side is not None,
            reachable=None if side is None else self.reached,
            **limits_summary(self.limits),
        )
        write_status(self.config.state_dir, status)
        return status

    def retire(self, now: datetime) -> list[SeedDecision]:
        """Stops seeding each file that reached its share ratio or seed time."""
        side = self.edge.swarm_side
        if side is None:
            return []
        stopped: list[SeedDecision] = []
        for sha256, torrent in list(side.seeding.items()):
            since = self.seeded_since.setdefault(sha256, now)
            status = torrent.status()
            record = SeedRecord(int(status.total_wanted), int(status.all_time_upload), since)
            decision = seed_decision(self.limits, record, now)
            if decision in (SeedDecision.RATIO_REACHED, SeedDecision.SEED_TIME_REACHED):
                side.evicted(sha256)
                self.archived.pop(sha256, None)
                self.retired.add(sha256)
                stopped.append(decision)
                log.info("seeding_stopped", sha256=sha256, reason=decision.value)
        return stopped

    async def seed_archives(self) -> int:
        """Seeds the verified .debs of apt's archive cache in place; returns how many began."""
        side = self.edge.swarm_side
        if side is None or not self.plan.uploads:
            return 0
        for sha256, path in list(self.archived.items()):
            if not path.exists():  # apt cleaned it
                side.evicted(sha256)
                del self.archived[sha256]
        began = 0
        for path in sorted(self.config.apt_archives.glob("*.deb")):
            pool = pool_name(path.name)
            try:
                info = path.stat()
                key = (path.name, info.st_size, info.st_mtime_ns)
                if key not in self.hashes:
                    self.hashes[key] = await asyncio.to_thread(_sha256, path)
            except OSError as exc:
                log.info("archive_unreadable", path=str(path), error=str(exc))
                continue
            sha256 = self.hashes[key]
            if sha256 in side.seeding or sha256 in self.retired:
                continue
            resource = self.verifier.locate(sha256)
            expected = self.verifier.expected(resource) if resource is not None else None
            if resource is None or expected is None or expected.size != info.st_size:
                continue  # no verified index vouches for these bytes
            if resource.path.rsplit("/", 1)[-1] != pool:
                continue  # the bytes of another file name: not what apt thinks it holds
            await side.after_upstream(resource, expected, str(path))
            if sha256 in side.seeding:
                self.archived[sha256] = path
                began += 1
        if began:
            log.info("archives_seeded", began=began, seeding=len(self.archived))
        return began

    async def _governor(self) -> None:
        rounds = 0
        while True:
            if rounds % SCAN_EVERY == 0:
                await self.seed_archives()
            rounds += 1
            await asyncio.sleep(GOVERN_EVERY)
            try:
                self.govern()
            except OSError as exc:
                log.warning("status_write_failed", error=str(exc))

    async def stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.edge.stop()


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_status(state_dir: Path, status: PeerStatus) -> None:
    tmp = state_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(status.to_json(), encoding="utf-8")
    os.replace(tmp, state_dir / STATUS_FILE)


async def start_peer(
    config: PeerConfig,
    *,
    sources: Sequence[aptsources.AptSource] = (),
    clock: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> RunningPeer:
    limits = config.limits()
    plan = swarm_plan(limits)
    if not config.public_swarm:
        plan = replace(plan, public=False, local_discovery=False, port_mapping=False)
    upstreams = config.upstreams or origins(sources)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    ledger = ledgers.load(config.state_dir)
    edge_cfg = edge_config(config, plan, upstreams)
    verifier = make_verifier(edge_cfg)
    edge = await start(edge_cfg, verifier=verifier)
    if edge.swarm_side is not None:
        settings = plan.libtorrent_settings()
        if limits.lab:
            # Reachable from the LAN (the edge's private swarm would listen on loopback).
            settings["listen_interfaces"] = f"0.0.0.0:{config.listen_port}"
        edge.swarm_side.swarm.apply(**settings)
        if plan.allowed_ranges is not None:
            edge.swarm_side.swarm.allow_only([str(n) for n in plan.allowed_ranges])
    peer = RunningPeer(config, limits, plan, edge, verifier, clock, ledger)
    peer.govern()
    peer.task = asyncio.create_task(peer._governor())
    log.info(
        "peer_started",
        http=edge.http_url,
        participation=limits.participation.value,
        swarm=edge.swarm_side is not None,
        upstreams=list(upstreams),
    )
    return peer


async def run(config: PeerConfig, stop: asyncio.Event) -> None:
    peer = await start_peer(config, sources=aptsources.read_sources())
    sdnotify.notify_env(ready=True, status=f"serving apt on {peer.edge.http_url}")
    try:
        await stop.wait()
    finally:
        sdnotify.notify_env(stopping=True)
        await peer.stop()


def status_main(config: PeerConfig) -> int:
    path = config.state_dir / STATUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"aptmesh peer status: no status in {path}: is the peer running?", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aptmesh peer status: reading {path}: {exc}", file=sys.stderr)
        return 1
    try:
        status = PeerStatus.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"aptmesh peer status: {path} is not a peer status: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(status))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    show_status = bool(args) and args[0] == "status"
    if show_status:
        args = args[1:]
    try:
        config = aptconfig.load(PeerConfig, "peer", args, os.environ, description=DESCRIPTION)
    except aptconfig.ConfigError as exc:
        print(f"aptmesh peer: {exc}", file=sys.stderr)
        return 2
    if show_status:
        return status_main(config)
    logs.configure("peer", config.log_level, config.log_format)
    try:
        return lifecycle.run(lambda stop: run(config, stop))
    except (OSError, ledgers.LedgerError) as exc:
        log.error("peer_failed", error=str(exc))
        print(f"aptmesh peer: starting: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
