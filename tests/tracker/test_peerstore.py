"""The PeerStore contract: counts, bounds, selection, expiry on an injected clock.

One suite for every implementation: `new_peers` makes a store of each kind in its
params (in memory; Redis, on a throw-away server); a new backend adds itself there.
How completed counts are bounded differs by backend (the memory store keeps the newest
`max_retired`, Redis lets them expire): those tests name the memory store.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aptmesh.testing import FakeClock
from aptmesh_tracker.peerstore import (
    MAX_RETIRED_COUNTS,
    Limit,
    MemoryPeerStore,
    PeerLimits,
    PeerStore,
)
from aptmesh_tracker.redis_peerstore import RedisPeerStore
from aptmesh_tracker.stores import StoreHealth
from aptmesh_tracker.wire import Peer, ScrapeStats, compact_address

IH = b"i" * 20

Factory = Callable[..., PeerStore]


@pytest.fixture(params=["memory", "redis"])
def new_peers(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """`new_peers(ttl=, clock=, rng=, limits=)`: an empty store of one kind."""
    opened: list[RedisPeerStore] = []

    def factory(**options: Any) -> PeerStore:
        memory = MemoryPeerStore(**options)
        if request.param == "memory":
            return memory
        url: str = request.getfixturevalue("redis_url")
        store = RedisPeerStore(
            url,
            options["ttl"],
            StoreHealth(),
            memory,
            options["clock"],
            options.get("rng"),
            limits=options.get("limits", PeerLimits()),
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def peer(n: int, ip: str = "10.0.0.1") -> Peer:
    return Peer(b"%020d" % n, compact_address(ip, 6000 + n))


def test_counts_and_events(new_peers: Factory) -> None:
    clock = FakeClock()
    store = new_peers(ttl=60, clock=clock)
    store.announce(IH, peer(1), seeder=True, event="started", numwant=50)
    result = store.announce(IH, peer(2), seeder=False, event="started", numwant=50)
    assert (result.complete, result.incomplete) == (1, 1)
    assert result.peers == (peer(1),)  # never the requester itself
    result = store.announce(IH, peer(2), seeder=True, event="completed", numwant=50)
    assert (result.complete, result.incomplete) == (2, 0)
    assert result.peers == ()  # a seeder is not given other seeders
    assert store.scrape(IH).downloaded == 1
    store.announce(IH, peer(1), seeder=True, event="stopped", numwant=50)
    store.expire()  # counts are gauges as of the last expire()
    assert (store.scrape(IH).complete, store.peer_counts()) == (1, (1, 0))
    store.announce(IH, peer(2), seeder=True, event="stopped", numwant=50)
    store.expire()  # counts are gauges as of the last expire()
    assert store.swarm_count() == 0


def test_completed_count_outlives_the_swarm_but_its_peers_do_not(new_peers: Factory) -> None:
    clock = FakeClock()
    store = new_peers(ttl=60, clock=clock)
    store.announce(IH, peer(1), seeder=True, event="completed", numwant=0)
    store.announce(IH, peer(1), seeder=True, event="stopped", numwant=0)
    store.expire()  # counts are gauges as of the last expire()
    assert (store.swarm_count(), store.peer_counts()) == (0, (0, 0))
    assert store.scrape(IH) == ScrapeStats(0, 0, 1)
    # the next swarm carries the count on, and leaves it behind when it expires
    store.announce(IH, peer(2), seeder=False, event="started", numwant=0)
    store.announce(IH, peer(2), seeder=True, event="completed", numwant=0)
    assert store.scrape(IH) == ScrapeStats(1, 0, 2)
    clock.advance(61)
    assert store.expire() == 1
    store.expire()  # counts are gauges as of the last expire()
    assert (store.swarm_count(), store.scrape(IH)) == (0, ScrapeStats(0, 0, 2))
    # a swarm nobody completed leaves nothing behind
    store.announce(b"n" * 20, peer(3), seeder=False, event="started", numwant=0)
    store.announce(b"n" * 20, peer(3), seeder=False, event="stopped", numwant=0)
    assert store.scrape(b"n" * 20) == ScrapeStats(0, 0, 0)


def completed_then_gone(store: PeerStore, info_hash: bytes) -> None:
    store.announce(info_hash, peer(1), seeder=True, event="completed", numwant=0)
    store.announce(info_hash, peer(1), seeder=True, event="stopped", numwant=0)


def test_retired_counts_are_capped_oldest_out() -> None:
    store = MemoryPeerStore(ttl=60, clock=FakeClock(), max_retired=2)
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    completed_then_gone(store, a)
    completed_then_gone(store, b)
    completed_then_gone(store, a)  # a's swarm emptied again, after b's: b is now the oldest
    completed_then_gone(store, c)
    assert [store.scrape(h).downloaded for h in (a, b, c)] == [2, 0, 1]
    # a live swarm's count is never evicted, only those of emptied swarms
    store.announce(a, peer(9), seeder=False, event="started", numwant=0)
    completed_then_gone(store, b)
    completed_then_gone(store, IH)
    assert [store.scrape(h).downloaded for h in (a, b, c, IH)] == [2, 1, 0, 1]
    off = MemoryPeerStore(ttl=60, clock=FakeClock(), max_retired=0)
    completed_then_gone(off, a)
    assert off.scrape(a) == ScrapeStats(0, 0, 0)


def test_retired_counts_uncapped_when_the_index_bounds_them() -> None:
    store = MemoryPeerStore(ttl=60, clock=FakeClock(), max_retired=None)
    hashes = [b"%020d" % n for n in range(MAX_RETIRED_COUNTS + 1)]
    for info_hash in hashes:
        completed_then_gone(store, info_hash)
    assert store.scrape(hashes[0]).downloaded == 1


def test_same_peer_id_from_another_address_is_another_peer(new_peers: Factory) -> None:
    store = new_peers(ttl=60, clock=FakeClock())
    store.announce(IH, peer(1, "10.0.0.1"), seeder=False, event="none", numwant=0)
    store.announce(
        IH,
        Peer(peer(1).peer_id, compact_address("10.9.9.9", 1)),
        seeder=False,
        event="stopped",
        numwant=0,
    )
    assert store.scrape(IH).incomplete == 1


def test_silent_peers_expire(new_peers: Factory) -> None:
    clock = FakeClock()
    store = new_peers(ttl=60, clock=clock)
    store.announce(IH, peer(1), seeder=True, event="started", numwant=0)
    clock.advance(30)
    store.announce(IH, peer(2), seeder=False, event="started", numwant=0)
    clock.advance(31)  # peer 1 is past its time, peer 2 is not
    assert store.announce(IH, peer(3), seeder=False, event="none", numwant=10).peers == (peer(2),)
    assert store.expire() == 1
    store.expire()  # counts are gauges as of the last expire()
    assert store.peer_counts() == (0, 2)
    clock.advance(100)
    assert store.expire() == 2
    store.expire()  # counts are gauges as of the last expire()
    assert store.swarm_count() == 0


def test_selection_is_bounded_and_a_uniform_sample(new_peers: Factory) -> None:
    store = new_peers(ttl=60, clock=FakeClock(), rng=random.Random(1))
    for n in range(100):
        store.announce(IH, peer(n, f"10.0.{n}.1"), seeder=False, event="none", numwant=0)
    me = peer(999, "10.9.9.9")
    chosen = store.announce(IH, me, seeder=False, event="none", numwant=10).peers
    assert len(set(chosen)) == 10 and me not in chosen
    assert store.announce(IH, me, seeder=False, event="none", numwant=0).peers == ()
    assert len(store.announce(IH, me, seeder=False, event="none", numwant=500).peers) == 100
    # Uniform enough: over many draws every peer is handed out.
    seen: set[Peer] = set()
    for _ in range(200):
        seen.update(store.announce(IH, me, seeder=False, event="none", numwant=10).peers)
    assert len(seen) == 100


LIMITS = PeerLimits(per_address_swarm=3, per_address=5, per_swarm=10, total=20)


def test_anonymous_peers_are_bounded_per_address_per_swarm_and_in_total(new_peers: Factory) -> None:
    store = new_peers(ttl=60, clock=FakeClock(), limits=LIMITS)

    def add(info_hash: bytes, n: int, ip: str) -> Limit | None:
        return store.announce(info_hash, peer(n, ip), seeder=False, event="none", numwant=5).refused

    assert [add(IH, n, "10.0.0.1") for n in range(4)] == [None, None, None, Limit.ADDRESS_SWARM]
    assert add(IH, 0, "10.0.0.1") is None  # a stored peer is always renewed
    assert [add(b"j" * 20, n, "10.0.0.1") for n in range(3)] == [None, None, Limit.ADDRESS]
    assert [add(IH, n, f"10.1.0.{n}") for n in range(8)][-2:] == [None, Limit.SWARM]
    for h in range(2):
        for n in range(4):
            add(b"%020d" % h, n, f"10.2.{h}.{n}")
    store.expire()  # counts are gauges as of the last expire()
    assert store.peer_counts() == (0, 20)
    assert add(b"z" * 20, 0, "10.3.0.1") is Limit.TOTAL
    refused = store.announce(IH, peer(60, "10.4.0.1"), seeder=False, event="none", numwant=50)
    assert refused.refused is Limit.SWARM and len(refused.peers) > 0  # refused, still answered
    store.expire()  # counts are gauges as of the last expire()
    assert store.swarm_count() == 4  # the refused peer made no swarm
    # Registered peers are never refused, and a stopped one frees its place.
    assert store.announce(IH, peer(50), seeder=True, event="none", numwant=0, registered=True)
    store.expire()  # counts are gauges as of the last expire()
    assert store.peer_counts() == (1, 20)
    store.announce(IH, peer(0, "10.0.0.1"), seeder=False, event="stopped", numwant=0)
    assert add(b"z" * 20, 0, "10.3.0.1") is None


@pytest.mark.parametrize("seeding", [False, True])
def test_registered_peers_are_offered_first_whatever_a_flood_stores(
    new_peers: Factory, seeding: bool
) -> None:
    store = new_peers(ttl=60, clock=FakeClock(), limits=PeerLimits(per_address_swarm=10**6))
    seed_box = peer(1, "10.0.0.2")
    edge = peer(2, "10.0.0.3")
    store.announce(IH, seed_box, seeder=True, event="started", numwant=0, registered=True)
    store.announce(IH, edge, seeder=False, event="started", numwant=0, registered=True)
    for n in range(5000):  # a flood from one address
        store.announce(IH, peer(n, "10.6.6.6"), seeder=n % 2 == 0, event="none", numwant=0)
    for n in range(20):
        got = store.announce(
            IH, peer(10_000 + n, "10.0.1.1"), seeder=seeding, event="none", numwant=5
        ).peers
        assert len(got) == 5
        expected = [edge] if seeding else [seed_box, edge]
        assert set(expected) <= set(got)


def test_swarm_hashes_are_the_swarms_with_peers(new_peers: Factory) -> None:
    clock = FakeClock()
    store = new_peers(ttl=60, clock=clock)
    other = b"j" * 20
    store.announce(IH, peer(1), seeder=True, event="started", numwant=50)
    store.announce(other, peer(1), seeder=False, event="started", numwant=50)
    store.expire()  # as recent as swarm_count: the last expire() at the latest
    assert sorted(store.swarm_hashes()) == [IH, other]
    store.announce(other, peer(1), seeder=False, event="stopped", numwant=50)
    store.expire()
    assert store.swarm_hashes() == [IH]


def test_the_epoch_lives_as_long_as_the_peers(new_peers: Factory) -> None:
    """A store's epoch names its swarms: a fresh in-memory store (a tracker restart) has a new
    one; a second Redis store on the same Redis (a restarted or another replica) the same."""
    clock = FakeClock()
    first, second = new_peers(ttl=60, clock=clock), new_peers(ttl=60, clock=clock)
    assert first.epoch and second.epoch
    if isinstance(first, MemoryPeerStore):
        assert first.epoch != second.epoch
    else:
        assert first.epoch == second.epoch
