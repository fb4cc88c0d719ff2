"""The edge's configuration: one frozen dataclass, flags and `APTMESH_EDGE_*` variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aptmesh.config import InvalidOption, option, require
from aptmesh.logs import LogFormat
from aptmesh_tracker.client import target_problem

VerifyMode = Literal["enforce", "auto", "off"]

# Debian's and Ubuntu's archives, their mirrors under those domains and their security
# archives (security.debian.org, security.ubuntu.com...): what a client with only a proxy line
# expects to keep working. An operator narrows or widens it with allowed_hosts.
DEFAULT_ALLOWED_HOSTS = ("*.debian.org", "*.ubuntu.com")


@dataclass(frozen=True)
class EdgeConfig:
    http_host: str = option("0.0.0.0", "address the HTTP cache listens on (apt clients, webseed)")
    http_port: int = option(3142, "HTTP port (apt-cacher-ng's 3142; 0 picks a free port)")
    grpc_bind: str = option("[::]:50051", "host:port of the EdgeService gRPC server")
    cache_dir: Path = option(
        Path("/var/cache/aptmesh/edge"), "directory of the cache (blobs, indexes, journal)"
    )
    cache_max_bytes: int = option(
        50 * 1024**3, "size limit of cached package files; least recently used go first", size=True
    )
    memory_cache_bytes: int = option(
        256 * 1024**2, "bytes of small files kept hot in memory (0 disables)", size=True
    )
    memory_file_max_bytes: int = option(
        2 * 1024**2,
        "files at most this size are also served from memory (most packages: p90 is 1.45 MB)",
        size=True,
    )
    upstreams: tuple[str, ...] = option(
        (),
        "served upstreams: HOST[:PORT]=URL[|URL...] (backends tried in order) or a bare URL "
        "meaning itself; anything else is refused",
    )
    edge_backends: tuple[str, ...] = option(
        (),
        "upstream backend URL prefixes that are other aptmesh edges (a peer's site edges): "
        "the bytes they send count as source=edge, not upstream",
    )
    allowed_hosts: tuple[str, ...] = option(
        DEFAULT_ALLOWED_HOSTS,
        "host patterns served as themselves besides the upstreams (clients with only a proxy "
        "line): *.DOMAIN or NAME, :PORT for a port other than 80/443; cached with "
        "verification where a signed index vouches, passed through otherwise; CONNECT "
        "tunnels (never cached) go only to these, on 443 or the port named",
    )
    keyring: Path | None = option(None, "OpenPGP keyring that verifies the upstreams' InRelease")
    verify_mode: VerifyMode = option(
        "enforce",
        "InRelease verification: enforce (refuse what does not verify), auto (verify when the "
        "key is known, pass through unverified otherwise, never caching it), off",
    )
    index_freeze_seconds: float = option(
        27.0, "an index fetched this recently is served without asking upstream (FreshIndexMaxAge)"
    )
    swarm_min_size: int = option(
        1024**2, "package files at least this size are fetched through the swarm", size=True
    )
    site_fetch: bool = option(
        True,
        "fetch package files below swarm_min_size through the edge of the zone that owns them "
        "(rendezvous hash over live edges), so a site fetches each from outside once",
    )
    upstream_timeout: float = option(
        30.0, "seconds to wait for an upstream to connect or send its headers (then 504)"
    )
    upstream_ca_file: Path | None = option(
        None,
        "CA bundle (PEM) that verifies https:// upstreams' certificates (empty: the system's)",
    )
    http_max_connections: int = option(
        192, "most open client connections; one more is closed at once (counted)"
    )
    http_max_in_flight: int = option(
        256, "most requests being answered at once, over all connections (then 503)"
    )
    http_max_pipelined: int = option(
        16, "requests queued on one connection whose work starts at once (apt pipelines 10)"
    )
    http_max_head_bytes: int = option(
        16 * 1024, "most bytes of one request's line and headers (then 431, closed)", size=True
    )
    http_head_timeout: float = option(
        15.0, "seconds a connection may take to send a request head, or sit idle between requests"
    )
    http_body_timeout: float = option(
        5.0, "seconds spent reading and discarding a request body the edge does not use"
    )
    http_send_timeout: float = option(
        30.0,
        "seconds a client may leave an answer unread (its socket buffer full) before the edge "
        "cuts its connection",
    )
    target_cache_bytes: int = option(
        8 * 1024**2,
        "bytes of remembered request-target resolutions and memory-hit answers (hot path)",
        size=True,
    )
    tracker_grpc: str = option(
        "",
        "host:port of the tracker's gRPC server, or several replicas' IP:port separated by "
        "commas (round robin, failover); empty: no swarm",
    )
    tracker_announce: tuple[str, ...] = option(
        (), "the tracker's HTTP announce URLs put in torrents (one per replica: each is told)"
    )
    publish_token: str = option("", "token to publish torrents to the index", secret=True)
    admin_token: str = option(
        "",
        "bearer token the Pin, Unpin and Prefetch gRPC calls need; empty refuses them",
        secret=True,
    )
    collection_poll_seconds: float = option(
        30.0,
        "seconds between reading the tracker's collections for this zone and re-resolving them "
        "against the indexes (a new repository generation is preheated within that; 0: never)",
    )
    collection_grace_seconds: float = option(
        3600.0,
        "seconds a file a collection no longer holds (an old version) stays pinned, for clients "
        "still on the previous generation",
    )
    collection_concurrency: int = option(
        2,
        "collection files fetched at once: preheating takes at most that many of the edge's "
        "downloads, so apt clients are never queued behind it",
    )
    edge_id: str = option("", "this edge's id in the registry (empty: derived from public_url)")
    public_url: str = option("", "URL clients and webseed users reach this edge at")
    zone: str = option("", "zone (site, rack) clients use to pick the nearest edge")
    zone_file: Path | None = option(
        None,
        "file whose first line is the zone, read at start (Kubernetes: written from the node's "
        "topology.kubernetes.io/zone label); when that line is not empty it replaces zone",
    )
    listen_port: int = option(6881, "BitTorrent listen port (0 picks a free port)")
    public_swarm: bool = option(
        False, "join the public swarm: DHT on, public trackers, reachable listen port"
    )
    public_trackers: tuple[str, ...] = option(
        (), "extra BitTorrent trackers announced to when public_swarm is on"
    )
    upload_rate_limit: int = option(
        0, "BitTorrent upload cap in bytes per second (0: unlimited)", size=True
    )
    upload_capacity: int = option(
        0,
        "BitTorrent uplink in bytes per second, reported to the tracker's registry so seeders "
        "can tell a seed-bound site (0: unknown)",
        size=True,
    )
    swarm_timeout: float = option(
        10.0, "seconds to wait for the first swarm bytes before falling back to upstream"
    )
    swarm_stall_seconds: float = option(
        15.0, "a swarm download without progress this long falls back to upstream"
    )
    swarm_webseed_delay: float = option(
        2.0,
        "seconds a swarm download runs on peers alone before the upstream may join as web seed "
        "(it joins when there are no peers, no seed, no new piece or too low a rate)",
    )
    swarm_webseed_stall_seconds: float = option(
        2.0, "a swarm download without a new piece this long adds the upstream as web seed"
    )
    swarm_webseed_min_rate: int = option(
        1024**2,
        "bytes per second from peers below which the upstream joins as web seed",
        size=True,
    )
    log_level: str = option("info", "log level: debug, info, warning, error")
    log_format: LogFormat = option("json", "log format: json or console")

    def __post_init__(self) -> None:
        if self.tracker_grpc:
            problem = target_problem(self.tracker_grpc)
            require(not problem, "tracker_grpc", problem)
        require(0 <= self.http_port <= 65535, "http_port", "must be between 0 and 65535")
        require(0 <= self.listen_port <= 65535, "listen_port", "must be between 0 and 65535")
        require(self.cache_max_bytes > 0, "cache_max_bytes", "must be positive")
        require(self.memory_cache_bytes >= 0, "memory_cache_bytes", "must not be negative")
        require(self.memory_file_max_bytes >= 0, "memory_file_max_bytes", "must not be negative")
        for name in (
            "http_max_connections",
            "http_max_in_flight",
            "http_max_pipelined",
            "http_head_timeout",
            "http_body_timeout",
            "http_send_timeout",
        ):
            require(getattr(self, name) > 0, name, "must be positive")
        require(self.http_max_head_bytes >= 1024, "http_max_head_bytes", "must be at least 1KiB")
        require(self.target_cache_bytes >= 0, "target_cache_bytes", "must not be negative")
        require(self.index_freeze_seconds >= 0, "index_freeze_seconds", "must not be negative")
        require(self.swarm_min_size > 0, "swarm_min_size", "must be positive")
        require(
            self.collection_poll_seconds >= 0, "collection_poll_seconds", "must not be negative"
        )
        require(
            self.collection_grace_seconds >= 0, "collection_grace_seconds", "must not be negative"
        )
        require(self.collection_concurrency > 0, "collection_concurrency", "must be positive")
        require(self.upstream_timeout > 0, "upstream_timeout", "must be positive")
        require(self.swarm_timeout > 0, "swarm_timeout", "must be positive")
        require(self.swarm_stall_seconds > 0, "swarm_stall_seconds", "must be positive")
        require(self.swarm_webseed_delay >= 0, "swarm_webseed_delay", "must not be negative")
        require(
            self.swarm_webseed_stall_seconds > 0,
            "swarm_webseed_stall_seconds",
            "must be positive",
        )
        require(self.swarm_webseed_min_rate >= 0, "swarm_webseed_min_rate", "must not be negative")
        require(self.upload_rate_limit >= 0, "upload_rate_limit", "must not be negative")
        require(self.upload_capacity >= 0, "upload_capacity", "must not be negative")
        require(
            self.log_level.lower() in {"debug", "info", "warning", "error"},
            "log_level",
            "must be debug, info, warning or error",
        )
        require(
            self.verify_mode != "enforce" or self.keyring is not None or not self.upstreams,
            "keyring",
            "verify_mode enforce needs a keyring to serve upstreams (or set verify_mode to "
            "auto or off)",
        )
        if self.zone_file is not None:
            # Frozen: the zone the rest of the edge reads is the file's, so
            # nothing else needs to know where it came from.
            object.__setattr__(self, "zone", _read_zone(self.zone_file) or self.zone)
        from aptmesh_edge.urls import UpstreamError, parse_upstreams

        try:
            parse_upstreams(self.upstreams)
        except UpstreamError as exc:
            raise_invalid("upstreams", str(exc))
        try:
            parse_upstreams((), self.allowed_hosts)
        except UpstreamError as exc:
            raise_invalid("allowed_hosts", str(exc))


# What an edge holds at rest (interpreter, aiohttp, grpc, libtorrent, prometheus): measured
# as the RSS of an idle `aptmesh edge` with a swarm (~85 MB), rounded up.
BASELINE_BYTES = 128 * 1024**2
# What one request head costs parsed (aiohttp's message, a CIMultiDict of str) per raw byte.
PARSED_HEAD_FACTOR = 3
# Heads aiohttp queues on one connection before it stops reading (web_protocol's
# MAX_MSG_QUEUE_SIZE), plus the one being read.
QUEUED_HEADS = 33
# Bytes of a running answer: one upstream read (upstream.READ_CHUNK) and the socket's buffer.
IN_FLIGHT_BYTES = 256 * 1024 + 64 * 1024
# Bytes an answer may leave in a connection's write buffer when its client stops reading:
# one write (http.MEMORY_WRITE_CHUNK, or a download's chunk) over the high-water mark.
SEND_BUFFER_BYTES = 256 * 1024 + 64 * 1024
# The per-path caches of urls.classify and body.content_type: 2 x 16,384 paths of at most
# 256 characters, with their entries' overhead.
PATH_CACHES_BYTES = 2 * 16384 * (256 + 200)


def memory_bound(config: EdgeConfig) -> int:
    """The most memory the edge's bounds let outsiders make it hold, plus its baseline:
    what the Kubernetes manifests' memory limit must cover (tests/deploy checks it)."""
    per_connection = (
        QUEUED_HEADS * config.http_max_head_bytes * PARSED_HEAD_FACTOR + SEND_BUFFER_BYTES
    )
    return (
        BASELINE_BYTES
        + config.memory_cache_bytes
        + config.target_cache_bytes
        + config.http_max_connections * per_connection
        + config.http_max_in_flight * IN_FLIGHT_BYTES
        + PATH_CACHES_BYTES
    )


def _read_zone(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidOption("zone_file", f"cannot read {path}: {exc}") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def raise_invalid(field: str, reason: str) -> None:
    require(False, field, reason)
