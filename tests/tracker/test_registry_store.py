"""The edge registry's contract, run against every backend's lease table (`open_backend`)."""

from __future__ import annotations

from dataclasses import replace

from aptmesh.testing import FakeClock
from aptmesh_tracker.convergence import MAX_SUITES, GenerationServed, converge
from aptmesh_tracker.records import Edge, SuiteGeneration
from aptmesh_tracker.registry_store import summed_uplink
from aptmesh_tracker.stores import Backend
from tests.tracker.conftest import Backends


def test_edge_leases_and_zone_order(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).registry
    store.register(Edge("b", "http://b:3142", "west"), 60)
    store.register(Edge("a", "http://a:3142", "east"), 60)
    clock.advance(30)
    store.register(Edge("c", "http://c:3142", "west"), 60)
    assert [e.id for e in store.live_edges("west")] == ["b", "c", "a"]
    assert [e.id for e in store.live_edges("east")] == ["a", "b", "c"]
    clock.advance(31)  # a and b ran out; c renewed at +30
    assert [e.id for e in store.live_edges("east")] == ["c"]
    assert store.edge_count() == 1
    assert store.expire() == 2
    store.register(Edge("c", "http://c2:3142", "west"), 60)  # renewal may move it
    assert store.live_edges("") == [Edge("c", "http://c2:3142", "west")]
    store.register(Edge("c", "http://c2:3142", "west", upload_capacity=12_500_000), 60)
    assert store.live_edges("") == [Edge("c", "http://c2:3142", "west", 12_500_000)]


def test_seed_boxes_have_leases_but_are_never_listed_as_edges(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).registry
    store.register(Edge("e", "http://e:3142", "z", 5_000_000), 60)
    assert store.seed_upload_capacity() == 0  # none live: unknown
    store.register(Edge("s1", "", "z", 12_500_000, seed_box=True), 60)
    assert store.live_edges("z") == [Edge("e", "http://e:3142", "z", 5_000_000)]
    assert store.edge_count() == 1
    assert store.seed_upload_capacity() == 12_500_000
    clock.advance(30)
    store.register(Edge("s2", "", "other", 2**63 - 1, seed_box=True), 60)
    assert store.seed_upload_capacity() == 12_500_000 + 2**63 - 1  # all zones
    store.register(Edge("s3", "", "", 0, seed_box=True), 60)
    assert store.seed_upload_capacity() == 0  # one unknown: the sum would understate
    store.register(Edge("s3", "", "", 1_000_000, seed_box=True), 60)  # renewal may change
    assert store.seed_upload_capacity() == 12_500_000 + 2**63 - 1 + 1_000_000
    clock.advance(31)  # e and s1 ran out; s2 and s3 registered at +30
    assert store.live_edges("z") == [] and store.edge_count() == 0
    assert store.seed_upload_capacity() == 2**63 - 1 + 1_000_000
    assert store.expire() == 2
    clock.advance(30)
    assert store.seed_upload_capacity() == 0
    assert store.expire() == 2


def test_summed_uplink() -> None:
    assert summed_uplink([]) == 0
    assert summed_uplink([3, 4]) == 7
    assert summed_uplink([3, 0, 4]) == 0


def test_registered_addresses_while_their_lease_lives(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).registry
    store.register(Edge("e", "http://e:3142", "z", address="10.0.0.5"), 60)
    store.register(Edge("s", "", "z", seed_box=True, address="10.0.0.6"), 30)
    assert store.is_registered_address("10.0.0.5") and store.is_registered_address("10.0.0.6")
    assert not store.is_registered_address("10.0.0.7")
    assert store.live_edges("z") == [Edge("e", "http://e:3142", "z", address="10.0.0.5")]
    clock.advance(31)
    assert not store.is_registered_address("10.0.0.6")
    store.refresh()
    assert store.is_registered_address("10.0.0.5")


def test_site_and_the_last_site_read(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).registry
    store.register(Edge("b", "http://b:3142", "west", 1), 60)
    store.register(Edge("a", "http://a:3142", "east", 2), 60)
    store.register(Edge("s", "", "east", 5_000_000, seed_box=True), 60)
    site = store.site("east")
    assert [e.id for e in site.edges] == ["a", "b"] and site.seed_upload_capacity == 5_000_000
    clock.advance(61)
    assert store.last_site("east") == site  # ended leases included: nobody could renew
    assert store.site("east").edges == [] and store.last_site("east").edges == []


def test_registered_addresses_live_as_long_as_their_leases(open_backend: Backends) -> None:
    clock = FakeClock()
    stores = open_backend(clock)
    store = stores.registry
    store.register(Edge("e", "http://e:3142", "z", address="10.0.0.1"), 60)
    store.register(Edge("s", "", "z", seed_box=True, address="10.0.0.2"), 120)
    assert store.is_registered_address("10.0.0.1") and store.is_registered_address("10.0.0.2")
    assert not store.is_registered_address("10.0.0.3") and not store.is_registered_address("")
    clock.advance(61)
    assert not store.is_registered_address("10.0.0.1")
    store.expire()
    assert store.is_registered_address("10.0.0.2")
    if stores.backend is not Backend.MEMORY:  # and a restart (or another replica) remembers
        again = open_backend(clock).registry
        assert again.is_registered_address("10.0.0.2")


def test_leases_list_edges_and_seed_boxes_with_their_ends(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).registry
    end = clock() + 60
    store.register(Edge("s", "", "", 100, seed_box=True), 60)
    store.register(Edge("e", "http://e:3142", "z"), 60)
    assert store.leases() == [
        (Edge("s", "", "", 100, seed_box=True), end),
        (Edge("e", "http://e:3142", "z"), end),
    ]
    clock.advance(61)
    assert store.leases() == []


def test_generations_are_kept_with_the_lease_and_derive_the_convergence(
    open_backend: Backends,
) -> None:
    """Each registration carries its edge's generations; the convergence view is read from
    the live leases (convergence.py): counts per generation, the earliest first-seen time,
    and a lag only while some edge serving the suite is behind."""
    clock = FakeClock()
    store = open_backend(clock).registry
    suite = "http_deb.example.org_80/debian/dists/stable"
    old = SuiteGeneration(suite, 1_000, "a" * 16, 900)
    new = SuiteGeneration(suite, 2_000, "b" * 16, 2_050)
    other = SuiteGeneration("http_deb.example.org_80/debian/dists/stable-security", 5, "c" * 16)
    store.register(Edge("a", "http://a:3142", "z", generations=(new, other)), 60)
    store.register(Edge("b", "http://b:3142", "z", generations=(old,)), 60)
    store.register(
        Edge("c", "http://c:3142", "z", generations=(replace(new, first_seen=2_010),)), 60
    )
    store.register(Edge("s", "", "z", seed_box=True, generations=(old,)), 60)  # never counted
    assert store.live_edges("z")[0].generations == (new, other)  # stored whole, in order
    views = converge(store.live_edges("z"))
    assert [v.suite for v in views] == sorted([suite, other.suite])
    stable = next(v for v in views if v.suite == suite)
    assert stable.edges == 3
    assert stable.generations == (
        GenerationServed(2_000, "b" * 16, 2_010, 2),
        GenerationServed(1_000, "a" * 16, 900, 1),
    )
    assert stable.lag_seconds(2_110) == 100.0
    store.register(Edge("b", "http://b:3142", "z", generations=(new,)), 60)  # b caught up
    stable = next(v for v in converge(store.live_edges("z")) if v.suite == suite)
    assert stable.generations == (GenerationServed(2_000, "b" * 16, 2_010, 3),)
    assert stable.lag_seconds(2_110) == 0.0
    clock.advance(61)
    assert converge(store.live_edges("z")) == ()  # derived from live leases only


def test_the_convergence_view_keeps_a_bounded_number_of_suites() -> None:
    edges = [
        Edge(f"e{n}", f"http://e{n}:3142", generations=(SuiteGeneration(f"s{n}", n, "0" * 16),))
        for n in range(MAX_SUITES + 10)
    ]
    edges.append(Edge("x", "http://x:3142", generations=(SuiteGeneration("s3", 9, "1" * 16),)))
    views = converge(edges)
    assert len(views) == MAX_SUITES
    assert "s3" in {v.suite for v in views}  # the most-served suites are kept first
