"""The tracker's Prometheus metrics (prefix `aptmesh_tracker_`, bounded labels only)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aptmesh_tracker.convergence import converge
from aptmesh_tracker.peerstore import Limit, PeerLimits, PeerStore
from aptmesh_tracker.registry_store import Registry
from aptmesh_tracker.stores import Component, Stores
from aptmesh_tracker.swarms import count_torrents
from aptmesh_tracker.wire import EVENTS, REASONS, Event, Reason


class TrackerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        peers: PeerStore,
        stores: Stores,
        limits: PeerLimits | None = None,
    ) -> None:
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
        refused = Counter(
            "aptmesh_tracker_refused_peers_total",
            "Announces answered but not stored because a peer bound was reached, by bound "
            "(a peer flood shows here).",
            ["limit"],
            registry=registry,
        )
        self.refused_peers: dict[Limit, Counter] = {
            limit: refused.labels(limit=limit.value) for limit in Limit
        }
        bound = Gauge(
            "aptmesh_tracker_peer_limit",
            "The configured most anonymous peers stored, by bound.",
            ["limit"],
            registry=registry,
        )
        limits = limits or PeerLimits()
        for limit, value in (
            (Limit.ADDRESS_SWARM, limits.per_address_swarm),
            (Limit.ADDRESS, limits.per_address),
            (Limit.SWARM, limits.per_swarm),
            (Limit.TOTAL, limits.total),
        ):
            bound.labels(limit=limit.value).set(value)
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
        ).set_function(lambda: count_torrents(peers.swarm_hashes(), stores.index.torrent_of))
        by_role = Gauge(
            "aptmesh_tracker_peers", "Peers in all swarms, by role.", ["role"], registry=registry
        )
        by_role.labels(role="seeder").set_function(lambda: peers.peer_counts()[0])
        by_role.labels(role="leecher").set_function(lambda: peers.peer_counts()[1])
        Gauge(
            "aptmesh_tracker_index_records", "Package records in the index.", registry=registry
        ).set_function(stores.index.record_count)
        Gauge(
            "aptmesh_tracker_edges", "Edges with a live registration lease.", registry=registry
        ).set_function(stores.registry.edge_count)
        registry.register(ConvergenceCollector(stores.registry))
        up = Gauge(
            "aptmesh_tracker_store_up",
            "1 while a store answered its last call, 0 while it is unreachable"
            " (index: the index and the edge registry; peers: the swarms).",
            ["store"],
            registry=registry,
        )
        for component in Component:
            up.labels(store=component.value).set_function(
                functools.partial(stores.health.up, component)
            )


class ConvergenceCollector(Collector):
    """Per suite (at most convergence.MAX_SUITES: bounded labels), from the registry's last
    view of the leases (no I/O): the live edges reporting it, those serving its newest
    generation, and how long that generation has waited for the rest."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        suites = converge(self._registry.view_edges())
        reporting = GaugeMetricFamily(
            "aptmesh_tracker_suite_edges",
            "Live edges that serve a suite (any generation), by suite.",
            labels=["suite"],
        )
        newest = GaugeMetricFamily(
            "aptmesh_tracker_generation_edges",
            "Live edges that serve the newest generation of a suite, by suite.",
            labels=["suite"],
        )
        lag = GaugeMetricFamily(
            "aptmesh_tracker_generation_lag_seconds",
            "Seconds since the newest generation of a suite was first seen while not every "
            "edge serving the suite serves it (0 once all do), by suite.",
            labels=["suite"],
        )
        for suite in suites:
            reporting.add_metric([suite.suite], suite.edges)
            newest.add_metric([suite.suite], suite.newest.edges)
            lag.add_metric([suite.suite], suite.lag_seconds(now))
        yield reporting
        yield newest
        yield lag
