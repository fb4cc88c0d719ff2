"""The peer's configuration: one frozen dataclass, flags and `APTMESH_PEER_*` variables.

The Debian package's debconf questions write the participation, the profile and the limits
to /etc/aptmesh/peer.env, which the aptmesh-peer unit reads (packaging/aptmesh-peer/); every
other option can be added to that file by hand and survives dpkg-reconfigure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aptmesh.aptsources import DEFAULT_KEYRING
from aptmesh.config import option, require
from aptmesh.logs import LogFormat
from aptmesh_peer.policy import (
    Limits,
    Participation,
    PolicyError,
    Profile,
    parse_ranges,
    parse_windows,
)

ParticipationName = Literal["opted-out", "download-only", "contribute"]
ProfileName = Literal["home", "lab"]
# RFC 1918, unique-local and link-local: what "the LAN" means unless the user says otherwise.
LAN_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


@dataclass(frozen=True)
class PeerConfig:
    participation: ParticipationName = option(
        "opted-out",
        "opted-out (no BitTorrent, no listening socket, no upload), download-only (fetch from "
        "peers, upload nothing) or contribute (upload within the limits)",
    )
    profile: ProfileName = option(
        "home", "home (the public swarm, within the limits) or lab (LAN ranges only, no caps)"
    )
    upload_rate_limit: int = option(
        512 * 1024, "upload cap in bytes per second over all peers (0: none)", size=True
    )
    share_ratio: float = option(
        2.0, "stop seeding a file once uploaded this many times its size (0: no limit)"
    )
    seed_hours: float = option(
        0.0, "stop seeding a file this many hours after it arrived (0: no limit)"
    )
    upload_windows: tuple[str, ...] = option(
        (), "local-time windows HH:MM-HH:MM when uploading is allowed (none: any time)"
    )
    daily_upload_budget: int = option(
        0, "bytes uploaded at most per local day (0: no budget)", size=True
    )
    monthly_upload_budget: int = option(
        0, "bytes uploaded at most per calendar month (0: no budget)", size=True
    )
    port_mapping: bool = option(False, "ask the router for a port (UPnP, NAT-PMP)")
    public_swarm: bool = option(
        True,
        "when taking part, join the public swarm (DHT, local discovery); false: only the "
        "configured tracker's peers",
    )
    lan_ranges: tuple[str, ...] = option(
        LAN_RANGES, "the address ranges a lab peer exchanges packages with (CIDR)"
    )
    http_port: int = option(3142, "loopback HTTP port apt uses (0 picks a free port)")
    listen_port: int = option(6881, "BitTorrent listen port when taking part (0: a free port)")
    edges: tuple[str, ...] = option(
        (), "the site's edges to fetch through first (URLs, path-prefix form), if any"
    )
    upstreams: tuple[str, ...] = option(
        (), "upstream archives served (scheme://host[:port]; none: this machine's apt sources)"
    )
    keyring: Path = option(DEFAULT_KEYRING, "OpenPGP keyring that verifies the upstreams")
    tracker_grpc: str = option(
        "", "host:port of a tracker's gRPC server; BitTorrent needs one (empty: none)"
    )
    tracker_announce: str = option("", "the tracker's announce URL put in torrents")
    cache_max_bytes: int = option(
        2 * 1024**3, "size limit of the peer's own cache of package files", size=True
    )
    state_dir: Path = option(
        Path("/var/lib/aptmesh/peer"), "state: upload accounting, torrents' resume data"
    )
    cache_dir: Path = option(Path("/var/cache/aptmesh/peer"), "cache of indexes and packages")
    apt_archives: Path = option(
        Path("/var/cache/apt/archives"),
        "apt's archive cache: the verified packages in it are seeded in place",
    )
    log_level: str = option("info", "log level: debug, info, warning, error")
    log_format: LogFormat = option("json", "log format: json or console")

    def __post_init__(self) -> None:
        require(0 <= self.http_port <= 65535, "http_port", "must be between 0 and 65535")
        require(0 <= self.listen_port <= 65535, "listen_port", "must be between 0 and 65535")
        require(self.cache_max_bytes > 0, "cache_max_bytes", "must be positive")
        for name in ("upload_rate_limit", "daily_upload_budget", "monthly_upload_budget"):
            require(getattr(self, name) >= 0, name, "must not be negative")
        require(self.share_ratio >= 0, "share_ratio", "must not be negative")
        require(self.seed_hours >= 0, "seed_hours", "must not be negative")
        try:
            parse_windows(self.upload_windows)
        except PolicyError as exc:
            require(False, "upload_windows", str(exc))
        try:
            parse_ranges(self.lan_ranges)
        except PolicyError as exc:
            require(False, "lan_ranges", str(exc))
        require(
            self.log_level.lower() in {"debug", "info", "warning", "error"},
            "log_level",
            "must be debug, info, warning or error",
        )

    def limits(self) -> Limits:
        return Limits(
            participation=Participation(self.participation),
            profile=Profile(self.profile),
            upload_rate_limit=self.upload_rate_limit,
            share_ratio=self.share_ratio,
            seed_seconds=self.seed_hours * 3600,
            windows=parse_windows(self.upload_windows),
            daily_budget=self.daily_upload_budget,
            monthly_budget=self.monthly_upload_budget,
            port_mapping=self.port_mapping,
            lan_ranges=parse_ranges(self.lan_ranges),
        )
