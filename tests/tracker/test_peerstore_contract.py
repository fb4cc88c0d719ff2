"""The peer store's contract, run against every backend (in memory, Redis)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aptmesh.testing import FakeClock
from aptmesh_tracker.peerstore import MemoryPeerStore
from aptmesh_tracker.redis_peerstore import RedisPeerStore
from aptmesh_tracker.stores import StoreHealth
from aptmesh_tracker.wire import Peer, ScrapeStats, compact_address

IH = b"i" * 20
NewStore = Callable[..., Any]  # (clock, **bounds) -> a peer store


def peer(n: int, ip: str = "10.0.0.1") -> Peer:
    return Peer(b"%020d" % n, compact_address(ip, 6000 + n))


@pytest.fixture(params=["memory", "redis"])
def new_peers(request: pytest.FixtureRequest) -> Iterator[NewStore]:
    opened: list[RedisPeerStore] = []

    def factory(clock: FakeClock, **bounds: int) -> Any:
        memory = MemoryPeerStore(ttl=60, clock=clock)
        if request.param == "memory":
            return memory
        url: str = request.getfixturevalue("redis_url")
        store = RedisPeerStore(url, 60, StoreHealth(), memory, clock, rng=None, **bounds)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def test_counts_and_events(new_peers: NewStore) -> None:
    store = new_peers(FakeClock())
    store.announce(IH, peer(1), seeder=True, event="started", numwant=50)
    result = store.announce(IH, peer(2), seeder=False, event="started", numwant=50)
    assert (result.complete, result.incomplete) == (1, 1)
    assert result.peers == (peer(1),)  # never the requester itself
    result = store.announce(IH, peer(2), seeder=True, event="completed", numwant=50)
    assert (result.complete, result.incomplete) == (2, 0)
    assert result.peers == ()  # a seeder is not given other seeders
    assert store.scrape(IH) == ScrapeStats(2, 0, 1)
    store.announce(IH, peer(1), seeder=True, event="stopped", numwant=50)
    store.expire()
    assert (store.scrape(IH).complete, store.peer_counts()) == (1, (1, 0))
    assert store.swarm_count() == 1
    store.announce(IH, peer(2), seeder=True, event="stopped", numwant=50)
    store.expire()
    assert store.peer_counts() == (0, 0)
    assert store.scrape(IH) == ScrapeStats(0, 0, 1)  # the completed count outlives the swarm


def test_same_peer_id_from_another_address_is_another_peer(new_peers: NewStore) -> None:
    store = new_peers(FakeClock())
    store.announce(IH, peer(1, "10.0.0.1"), seeder=False, event="none", numwant=0)
    other = Peer(peer(1).peer_id, compact_address("10.9.9.9", 1))
    store.announce(IH, other, seeder=False, event="stopped", numwant=0)
    assert store.scrape(IH).incomplete == 1


def test_silent_peers_expire(new_peers: NewStore) -> None:
    clock = FakeClock()
    store = new_peers(clock)
    store.announce(IH, peer(1), seeder=True, event="started", numwant=0)
    clock.advance(30)
    store.announce(IH, peer(2), seeder=False, event="started", numwant=0)
    clock.advance(31)  # peer 1 is past its time, peer 2 is not
    assert store.announce(IH, peer(3), seeder=False, event="none", numwant=10).peers == (peer(2),)
    assert store.expire() == 1
    assert store.peer_counts() == (0, 2)
    clock.advance(100)
    assert store.expire() == 2
    assert store.swarm_count() == 0


def test_selection_is_bounded_and_spread(new_peers: NewStore) -> None:
    store = new_peers(FakeClock())
    for n in range(60):
        store.announce(IH, peer(n, f"10.0.{n}.1"), seeder=n % 2 == 0, event="none", numwant=0)
    seen: set[Peer] = set()
    for _ in range(10):
        got = store.announce(IH, peer(99), seeder=False, event="none", numwant=10).peers
        assert len(got) == len(set(got)) == 10 and peer(99) not in got
        seen.update(got)
    assert len(seen) > 20  # random draws, not always the same ten
    everyone = store.announce(IH, peer(99), seeder=False, event="none", numwant=500).peers
    assert len(everyone) == 60
    leechers = store.announce(IH, peer(98), seeder=True, event="none", numwant=500).peers
    assert set(leechers) == {p for p in everyone if int(p.peer_id) % 2 == 1} | {peer(99)}
    assert len(leechers) == 31  # a seeder gets only leechers


def test_redis_bounds_refuse_new_anonymous_peers_but_answer_them(redis_url: str) -> None:
    clock = FakeClock()
    store = RedisPeerStore(
        redis_url,
        60,
        StoreHealth(),
        MemoryPeerStore(ttl=60, clock=clock),
        clock,
        per_address_swarm=2,
        per_address=3,
        per_swarm=4,
        total=6,
    )
    try:
        for n in range(3):
            store.announce(IH, peer(n, "10.0.0.1"), seeder=True, event="none", numwant=0)
        assert store.last_refusal == "address_swarm" and store.scrape(IH).complete == 2
        store.announce(b"j" * 20, peer(5, "10.0.0.1"), seeder=True, event="none", numwant=0)
        got = store.announce(b"k" * 20, peer(6, "10.0.0.1"), seeder=True, event="none", numwant=0)
        assert store.last_refusal == "address" and got.complete == 0
        for n in range(10, 13):
            store.announce(IH, peer(n, f"10.1.0.{n}"), seeder=False, event="none", numwant=0)
        assert store.last_refusal == "swarm" and store.scrape(IH).incomplete == 2
        got = store.announce(IH, peer(13, "10.2.0.1"), seeder=False, event="none", numwant=50)
        assert len(got.peers) == 4  # refused, and still answered
        store.announce(b"m" * 20, peer(20, "10.3.0.1"), seeder=False, event="none", numwant=0)
        store.announce(b"m" * 20, peer(21, "10.3.0.2"), seeder=False, event="none", numwant=0)
        assert store.last_refusal == "total"
        # a stored peer is always renewed; a registered one is never refused
        store.announce(IH, peer(0, "10.0.0.1"), seeder=True, event="none", numwant=0)
        assert store.last_refusal == ""
        store.announce(
            IH, peer(30, "10.9.0.1"), seeder=True, event="none", numwant=0, registered=True
        )
        assert store.last_refusal == "" and store.scrape(IH).complete == 3
        # registered peers come first in a leecher's answer
        got = store.announce(IH, peer(31, "10.8.0.1"), seeder=False, event="none", numwant=1)
        assert got.peers == (peer(30, "10.9.0.1"),)
    finally:
        store.close()


def test_the_epoch_lives_as_long_as_the_peers(new_peers: NewStore) -> None:
    """A store's epoch names its swarms: a fresh in-memory store (a tracker restart) has a new
    one; a second Redis store on the same Redis (a restarted or another replica) the same."""
    clock = FakeClock()
    first, second = new_peers(clock), new_peers(clock)
    assert first.epoch and second.epoch
    if isinstance(first, MemoryPeerStore):
        assert first.epoch != second.epoch
    else:
        assert first.epoch == second.epoch
