"""The tracker's configuration (`aptmesh tracker --help`, `APTMESH_TRACKER_*`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aptmesh.config import mask_url_password, option, require
from aptmesh_tracker.peerstore import PeerLimits
from aptmesh_tracker.stores import backend_of

SERVICE = "tracker"


@dataclass(frozen=True)
class TrackerConfig:
    grpc_bind: str = option(
        "[::]:50051", "host:port of the gRPC index and edge registry (port 0 picks a free one)"
    )
    http_host: str = option("0.0.0.0", "address of the BitTorrent HTTP tracker and /metrics")
    http_port: int = option(6969, "port of /announce, /scrape, /metrics, /healthz (0 = free)")
    http_head_timeout: float = option(
        15.0,
        "seconds an HTTP connection has to send a complete request head, and may stay "
        "idle between requests; then it is closed",
    )
    http_body_timeout: float = option(
        5.0, "seconds spent reading and discarding a request body (the tracker reads none)"
    )
    db_path: Path = option(
        Path("aptmesh-tracker.sqlite3"),
        "SQLite file holding the index and edge registry; its directory must be writable",
    )
    store: str = option(
        "",
        "where the index and edge registry live: empty for the SQLite file db_path (one "
        "replica), or postgresql://USER:PASSWORD@HOST:PORT/DB, which several replicas share",
        mask=mask_url_password,
    )
    peer_store: str = option(
        "",
        "where swarms live: empty for this process's memory (one replica), or "
        "redis://[:PASSWORD@]HOST:PORT/DB, which several replicas share",
        mask=mask_url_password,
    )
    store_refresh_interval: float = option(
        5.0,
        "seconds between catching up with what other replicas published to a shared store "
        "(and checking that it answers)",
    )
    publish_token: str = option(
        "",
        "bearer token needed to publish records and register edges; empty refuses both",
        secret=True,
    )
    announce_interval: int = option(
        1800, "seconds BitTorrent clients are told to wait between announces ('interval')"
    )
    min_interval: int = option(
        60, "seconds a client must wait before announcing again ('min interval')"
    )
    peer_ttl: int = option(
        2700,
        "seconds after its last announce that a silent peer is forgotten "
        "(keep above announce_interval)",
    )
    numwant_default: int = option(50, "peers returned when a client does not say how many")
    numwant_max: int = option(200, "most peers returned to one announce, whatever numwant says")
    max_peers_per_address_swarm: int = option(
        8,
        "most peers one IP address has in one swarm (registered edges and seed boxes "
        "excepted); more are answered but not stored",
    )
    max_peers_per_address: int = option(
        1000, "most peers one IP address has in all swarms (registered ones excepted)"
    )
    max_peers_per_swarm: int = option(
        2000, "most anonymous peers in one swarm (registered edges and seed boxes excepted)"
    )
    max_peers: int = option(
        200_000,
        "most anonymous peers in all swarms: about 550 bytes each, so 110 MB at the default",
    )
    open_tracker: bool = option(
        False, "track any infohash; false tracks only the torrents in the index"
    )
    edge_lease_seconds: int = option(
        60, "seconds an edge registration lasts; edges renew well before it ends"
    )
    max_batch: int = option(1000, "most SHA-256 hashes accepted in one BatchGetPackages call")
    log_level: Literal["debug", "info", "warning", "error"] = option("info", "log level")
    log_format: Literal["json", "console"] = option("json", "log format on stderr")

    def __post_init__(self) -> None:
        try:
            backend_of(self.store)
        except ValueError as exc:
            require(False, "store", str(exc))
        require(
            self.peer_store == "" or self.peer_store.startswith(("redis://", "rediss://")),
            "peer_store",
            "must be empty (in memory) or a redis:// or rediss:// URL",
        )
        require(
            0 < self.store_refresh_interval <= 3600,
            "store_refresh_interval",
            "must be more than 0 and at most 3600 seconds",
        )
        require(":" in self.grpc_bind, "grpc_bind", "must be host:port, e.g. [::]:50051")
        require(0 <= self.http_port <= 65535, "http_port", "must be between 0 and 65535")
        require(self.http_head_timeout > 0, "http_head_timeout", "must be above 0 seconds")
        require(self.http_body_timeout > 0, "http_body_timeout", "must be above 0 seconds")
        require(self.announce_interval >= 1, "announce_interval", "must be at least 1 second")
        require(
            0 <= self.min_interval <= self.announce_interval,
            "min_interval",
            "must be between 0 and announce_interval",
        )
        require(
            self.peer_ttl > self.announce_interval,
            "peer_ttl",
            "must be longer than announce_interval, or peers expire between announces",
        )
        require(self.numwant_max >= 0, "numwant_max", "must not be negative")
        require(
            0 <= self.numwant_default <= self.numwant_max,
            "numwant_default",
            "must be between 0 and numwant_max",
        )
        require(self.edge_lease_seconds >= 1, "edge_lease_seconds", "must be at least 1 second")
        require(1 <= self.max_batch <= 100_000, "max_batch", "must be between 1 and 100000")
        for name in (
            "max_peers_per_address_swarm",
            "max_peers_per_address",
            "max_peers_per_swarm",
            "max_peers",
        ):
            require(getattr(self, name) >= 1, name, "must be at least 1")

    def peer_limits(self) -> PeerLimits:
        return PeerLimits(
            per_address_swarm=self.max_peers_per_address_swarm,
            per_address=self.max_peers_per_address,
            per_swarm=self.max_peers_per_swarm,
            total=self.max_peers,
        )
