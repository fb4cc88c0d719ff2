"""The convergence metrics: per suite, bounded in count, from the registry's view."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from aptmesh.testing import FakeClock
from aptmesh_tracker.convergence import MAX_SUITES
from aptmesh_tracker.metrics import ConvergenceCollector
from aptmesh_tracker.records import Edge, SuiteGeneration
from aptmesh_tracker.registry_store import MemoryLeases, Registry

SUITE = "http_deb.example.org_80/debian/dists/stable"


def test_the_convergence_gauges_follow_the_edges_and_stay_bounded() -> None:
    clock = FakeClock()
    registry = Registry(MemoryLeases(), clock)
    metrics = CollectorRegistry()
    metrics.register(ConvergenceCollector(registry, clock))
    now = int(clock())
    old = SuiteGeneration(SUITE, now - 3600, "a" * 16, now - 3600)
    new = SuiteGeneration(SUITE, now - 60, "b" * 16, now - 30)
    registry.register(Edge("a", "http://a:3142", "z", generations=(new,)), 60)
    registry.register(Edge("b", "http://b:3142", "z", generations=(old,)), 60)

    def value(name: str, suite: str = SUITE) -> float | None:
        return metrics.get_sample_value(name, {"suite": suite})

    assert value("aptmesh_tracker_suite_edges") == 2
    assert value("aptmesh_tracker_generation_edges") == 1
    assert value("aptmesh_tracker_generation_lag_seconds") == clock() - new.first_seen
    clock.advance(10)
    assert value("aptmesh_tracker_generation_lag_seconds") == clock() - new.first_seen
    registry.register(Edge("b", "http://b:3142", "z", generations=(new,)), 60)
    assert value("aptmesh_tracker_generation_edges") == 2
    assert value("aptmesh_tracker_generation_lag_seconds") == 0

    # However many suites the edges report, the labels stay bounded.
    for n in range(MAX_SUITES + 8):
        suite = SuiteGeneration(f"{SUITE}-{n}", now, "c" * 16, now)
        registry.register(Edge(f"e{n}", f"http://e{n}:3142", "z", generations=(suite,)), 60)
    families = {f.name: f for f in metrics.collect()}
    assert len(families["aptmesh_tracker_suite_edges"].samples) == MAX_SUITES
    assert value("aptmesh_tracker_suite_edges") == 2  # the most-served suite is kept
    clock.advance(61)
    assert value("aptmesh_tracker_suite_edges") is None  # ended leases count for nothing
