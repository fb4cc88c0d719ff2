"""The seeder's Prometheus metrics (one registry per seeder; names follow DESIGN.md).

Labels are bounded: `repository` takes the names in the configuration,
`kind`, `result` and `direction` a fixed handful of values. Swarm figures
(torrents, peers, payload bytes, upload rate) are read from the session at
scrape time, so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aptmesh.swarm import SwarmStats

# replay: an InRelease older than one verified; piece: a piece of a seeded file failed its
# hash in libtorrent; held_file: a re-hash found a held file changed on disk (seedbox.py).
VERIFICATION_KINDS = (
    "signature",
    "index_hash",
    "package_hash",
    "malformed",
    "replay",
    "piece",
    "held_file",
)
SYNC_RESULTS = ("ok", "unchanged", "failed")
_SYNC_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _SwarmCollector(Collector):
    def __init__(self, stats: Callable[[], SwarmStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        payload = CounterMetricFamily(
            "aptmesh_torrent_payload_bytes",
            "BitTorrent payload bytes sent to and received from peers.",
            labels=["service", "direction"],
        )
        payload.add_metric(["seeder", "upload"], stats.payload_uploaded_bytes)
        payload.add_metric(["seeder", "download"], stats.payload_downloaded_bytes)
        yield payload
        yield GaugeMetricFamily(
            "aptmesh_seeder_torrents", "Torrents being seeded.", value=stats.torrents
        )
        yield GaugeMetricFamily(
            "aptmesh_seeder_request_queue_depth",
            "Block requests each peer may queue at the seeder (told to peers at handshake).",
            value=stats.request_queue_depth,
        )
        yield GaugeMetricFamily(
            "aptmesh_seeder_peers", "Peers connected over all torrents.", value=stats.peers
        )
        yield GaugeMetricFamily(
            "aptmesh_seeder_upload_rate_bytes_per_second",
            "Current BitTorrent payload upload rate.",
            value=stats.upload_rate,
        )


class SeederMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        repositories: Iterable[str],
        swarm_stats: Callable[[], SwarmStats],
    ) -> None:
        repositories = list(repositories)
        self.upstream_bytes = Counter(
            "aptmesh_seeder_upstream_bytes_total",
            "Bytes fetched from upstream repositories (index files and package files).",
            ["kind"],
            registry=registry,
        )
        self.hashed_bytes = Counter(
            "aptmesh_seeder_hashed_bytes_total",
            "Package bytes hashed to verify them and make their torrents.",
            registry=registry,
        )
        self.verification_failures = Counter(
            "aptmesh_verification_failures_total",
            "Files refused because a signature, size or hash did not verify.",
            ["service", "kind"],
            registry=registry,
        )
        self.syncs = Counter(
            "aptmesh_seeder_syncs_total",
            "Repository syncs by result (unchanged: InRelease had not changed).",
            ["repository", "result"],
            registry=registry,
        )
        self.sync_duration = Histogram(
            "aptmesh_seeder_sync_duration_seconds",
            "Duration of repository syncs.",
            ["repository"],
            buckets=_SYNC_BUCKETS,
            registry=registry,
        )
        self.last_good_sync = Gauge(
            "aptmesh_seeder_last_good_sync_timestamp_seconds",
            "Unix time of the last sync of a repository that worked (0: never).",
            ["repository"],
            registry=registry,
        )
        self.selected_packages = Gauge(
            "aptmesh_seeder_selected_packages",
            "Package files the last good sync selected for seeding.",
            ["repository"],
            registry=registry,
        )
        self.selected_bytes = Gauge(
            "aptmesh_seeder_selected_bytes",
            "Total size of the package files the last good sync selected.",
            ["repository"],
            registry=registry,
        )
        self.budget_cut_bytes = Gauge(
            "aptmesh_seeder_budget_cut_bytes",
            "Size of the package files worth seeding that the byte budget left out.",
            ["repository"],
            registry=registry,
        )
        self.absent_indexes = Gauge(
            "aptmesh_seeder_absent_indexes",
            "Indexes the configuration asks for that the last verified Release does not list "
            "(skipped, as apt skips them).",
            ["repository"],
            registry=registry,
        )
        self.site_edges = Gauge(
            "aptmesh_seeder_site_edges",
            "Live edges the registry listed at the seeder's last look (-1: not read yet).",
            registry=registry,
        )
        self.site_edges.set(-1)
        self.fetched_files = Counter(
            "aptmesh_seeder_fetched_files_total",
            "Package files fetched from upstream and verified.",
            registry=registry,
        )
        self.published = Counter(
            "aptmesh_seeder_published_total",
            "Records published to the tracker's index.",
            registry=registry,
        )
        self.retired = Counter(
            "aptmesh_seeder_retired_total",
            "Files no longer seeded because they left the index for longer than the grace period.",
            registry=registry,
        )
        for kind in VERIFICATION_KINDS:
            self.verification_failures.labels("seeder", kind)
        for name in repositories:
            for result in SYNC_RESULTS:
                self.syncs.labels(name, result)
            self.sync_duration.labels(name)
            self.last_good_sync.labels(name).set(0)
            self.selected_packages.labels(name)
            self.selected_bytes.labels(name)
            self.budget_cut_bytes.labels(name)
            self.absent_indexes.labels(name)
        for kind in ("index", "package"):
            self.upstream_bytes.labels(kind)
        registry.register(_SwarmCollector(swarm_stats))

    def on_upstream_bytes(self, kind: str, n: int) -> None:
        self.upstream_bytes.labels(kind).inc(n)

    def verification_failure(self, kind: str) -> None:
        self.verification_failures.labels("seeder", kind).inc()
