"""The edge's Prometheus metrics (names fixed by DESIGN.md), on its own registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aptmesh.metrics import new_registry
from aptmesh_edge.decisions import (
    FallbackReason,
    FaultAction,
    Refusal,
    SiteResult,
    SourceKind,
    UpstreamFault,
)
from aptmesh_edge.status import FallbackLog

if TYPE_CHECKING:
    from aptmesh_edge.cache import CacheStats


class EdgeMetrics:
    """Owns the edge's registry and its metrics, labels pre-registered from the enums."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else new_registry("edge")
        # The status page's examples of fallbacks, kept where the counter grows (`fell_back`).
        self.recent_fallbacks = FallbackLog(clock=clock)
        r = self.registry
        self.served_bytes = Counter(
            "aptmesh_edge_served_bytes_total",
            "Bytes of file bodies sent to clients, by where the edge got them.",
            ["source"],
            registry=r,
        )
        self.requests = Counter(
            "aptmesh_edge_requests_total",
            "File requests answered, by file class and cache outcome "
            "(hit, miss, revalidated, stale, bypass, error).",
            ["file_class", "cache"],
            registry=r,
        )
        self.fallbacks = Counter(
            "aptmesh_edge_upstream_fallbacks_total",
            "Package fetches that went to the upstream over HTTP instead of the swarm, or that "
            "added it as web seed to a swarm download (reasons webseed_*), by reason.",
            ["reason"],
            registry=r,
        )
        self.zone_revalidations = Counter(
            "aptmesh_edge_zone_revalidations_total",
            "InRelease files revalidated at once because another edge of the zone serves a "
            "newer generation of the suite (aptmesh_edge.convergence).",
            registry=r,
        )
        self.verification_failures = Counter(
            "aptmesh_verification_failures_total",
            "Files refused because a signature or hash did not verify, by kind.",
            ["service", "kind"],
            registry=r,
        )
        self.torrent_payload = Counter(
            "aptmesh_torrent_payload_bytes_total",
            "BitTorrent payload bytes exchanged with peers (not web seeds), by direction.",
            ["service", "direction"],
            registry=r,
        )
        self.upstream_fetches = Counter(
            "aptmesh_edge_upstream_fetches_total",
            "HTTP requests the edge made to upstreams, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.upstream_faults = Counter(
            "aptmesh_edge_upstream_faults_total",
            "Upstream answers that could not be used, by fault and what the edge did "
            "(retried: asked again, resuming a file of known hash; failed: a clean error).",
            ["reason", "action"],
            registry=r,
        )
        self.tunnels = Counter(
            "aptmesh_edge_tunnels_total",
            "CONNECT requests, by result (opened: tunnelled to an allowed host; refused: not "
            "allowed; failed: the host could not be reached).",
            ["result"],
            registry=r,
        )
        self.site_fetches = Counter(
            "aptmesh_edge_site_fetches_total",
            "Small package files asked of the edge of the zone that owns them, by result "
            "(failed: fetched from the upstream instead).",
            ["result"],
            registry=r,
        )
        self.stale_served = Counter(
            "aptmesh_edge_stale_index_served_total",
            "Index files served from cache because the upstream could not be reached.",
            registry=r,
        )
        self.disk_full = Counter(
            "aptmesh_edge_disk_full_total",
            "Files the cache had no disk space for, by file class and what the edge did "
            "(pass_through: streamed from upstream uncached; failed: the request failed; "
            "not_cached: served, not kept).",
            ["file_class", "action"],
            registry=r,
        )
        self.collection_files = Gauge(
            "aptmesh_edge_collection_files",
            "Files the collections targeting this edge's zone hold, by state (wanted, present, "
            "missing).",
            ["state"],
            registry=r,
        )
        self.collection_bytes = Gauge(
            "aptmesh_edge_collection_bytes",
            "Bytes of the files the collections targeting this edge's zone hold, by state.",
            ["state"],
            registry=r,
        )
        self.collection_complete_seconds = Histogram(
            "aptmesh_edge_collection_complete_seconds",
            "Seconds from a collection change (a new version or repository generation) to every "
            "file on this edge.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
            registry=r,
        )
        for state in ("wanted", "present", "missing"):
            self.collection_files.labels(state=state)
            self.collection_bytes.labels(state=state)
        self.cache_size = Gauge(
            "aptmesh_edge_cache_size_bytes", "Bytes of package files in the cache.", registry=r
        )
        self.cache_limit = Gauge(
            "aptmesh_edge_cache_limit_bytes", "Size limit of the package cache.", registry=r
        )
        self.cache_entries = Gauge(
            "aptmesh_edge_cache_entries", "Package files in the cache.", registry=r
        )
        self.cache_pinned = Gauge(
            "aptmesh_edge_cache_pinned_entries", "Pinned package files in the cache.", registry=r
        )
        self.memory_bytes = Gauge(
            "aptmesh_edge_memory_cache_bytes", "Bytes held by the in-memory tier.", registry=r
        )
        self.downloads_active = Gauge(
            "aptmesh_edge_downloads_in_flight", "Package downloads in progress.", registry=r
        )
        self.swarm_peers = Gauge(
            "aptmesh_edge_swarm_peers", "Peers connected across the edge's torrents.", registry=r
        )
        self.swarm_torrents = Gauge(
            "aptmesh_edge_swarm_torrents", "Torrents the edge downloads or seeds.", registry=r
        )
        self.http_refused = Counter(
            "aptmesh_edge_http_refused_total",
            "Clients refused by the HTTP front end's bounds, by the bound (connections, "
            "in_flight, head_size, bad_request).",
            ["limit"],
            registry=r,
        )
        self.http_connections = Gauge(
            "aptmesh_edge_http_connections", "Open client connections.", registry=r
        )
        self.http_in_flight = Gauge(
            "aptmesh_edge_http_in_flight",
            "Requests being answered (pipelined ones whose work started included).",
            registry=r,
        )
        self.target_cache_bytes = Gauge(
            "aptmesh_edge_target_cache_bytes",
            "Bytes of remembered target resolutions and memory-hit answers (bounded by "
            "target_cache_bytes).",
            registry=r,
        )
        for limit in Refusal:
            self.http_refused.labels(limit=limit.value)
        for source in SourceKind:
            self.served_bytes.labels(source=source.value)
        for reason in FallbackReason:
            self.fallbacks.labels(reason=reason.value)
        for fault in UpstreamFault:
            for action in FaultAction:
                self.upstream_faults.labels(reason=fault.value, action=action.value)
        for tunnel_result in ("opened", "refused", "failed"):
            self.tunnels.labels(result=tunnel_result)
        for result in SiteResult:
            self.site_fetches.labels(result=result.value)
        for direction in ("upload", "download"):
            self.torrent_payload.labels(service="edge", direction=direction)

    def fell_back(self, reason: FallbackReason, path: str) -> None:
        """A package fetch went to the upstream (or added it as web seed): counted, and kept
        as an example for the status page. The one place a fallback is recorded."""
        self.fallbacks.labels(reason=reason.value).inc()
        self.recent_fallbacks.add(path, reason)

    def show_cache(self, stats: CacheStats) -> None:
        """The cache gauges, from the store's statistics."""
        self.cache_size.set(stats.size_bytes)
        self.cache_limit.set(stats.limit_bytes)
        self.cache_entries.set(stats.entries)
        self.cache_pinned.set(stats.pinned_entries)
        self.memory_bytes.set(stats.memory_bytes)
