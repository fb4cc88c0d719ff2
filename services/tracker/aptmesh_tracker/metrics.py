"""The tracker's Prometheus metrics (prefix `aptmesh_tracker_`, bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from aptmesh_tracker.peerstore import PeerStore
from aptmesh_tracker.store import Store
from aptmesh_tracker.swarms import count_torrents
from aptmesh_tracker.wire import EVENTS, REASONS, Event, Reason


class TrackerMetrics:
    def __init__(self, registry: CollectorRegistry, peers: PeerStore, store: Store) -> None:
        announces = Counter(
            "aptmesh_tracker_announces_total",
            "Announces answered, by BitTorrent event (none = a regular re-announce).",
            ["event"],
            registry=registry,
        )
        self.announces: dict[Event, Counter] = {e: announces.labels(event=e) for e in EVENTS}
        self.scrapes = Counter(
            "aptmesh_tracker_scrapes_total", "Scrape requests answered.", registry=registry
        )
        bad = Counter(
            "aptmesh_tracker_bad_requests_total",
            "Announce and scrape requests refused with a failure reason, by reason.",
            ["reason"],
            registry=registry,
        )
        self.bad_requests: dict[Reason, Counter] = {r: bad.labels(reason=r) for r in REASONS}
        self.expired_peers = Counter(
            "aptmesh_tracker_expired_peers_total",
            "Peers forgotten because they stopped announcing.",
            registry=registry,
        )
        # Per torrent: a hybrid torrent's v1 and v2 swarms count once (see swarms.py).
        Gauge(
            "aptmesh_tracker_swarms",
            "Torrents with at least one peer (a hybrid torrent's v1 and v2 swarms count once).",
            registry=registry,
        ).set_function(lambda: count_torrents(peers.swarm_hashes(), store.torrent_of))
        by_role = Gauge(
            "aptmesh_tracker_peers", "Peers in all swarms, by role.", ["role"], registry=registry
        )
        by_role.labels(role="seeder").set_function(lambda: peers.peer_counts()[0])
        by_role.labels(role="leecher").set_function(lambda: peers.peer_counts()[1])
        Gauge(
            "aptmesh_tracker_index_records", "Package records in the index.", registry=registry
        ).set_function(store.record_count)
        Gauge(
            "aptmesh_tracker_edges", "Edges with a live registration lease.", registry=registry
        ).set_function(store.edge_count)
