"""Swarms in memory: counts, selection, expiry on an injected clock."""

from __future__ import annotations

import random

from aptmesh.testing import FakeClock
from aptmesh_tracker.peerstore import (
    MAX_RETIRED_COUNTS,
    MemoryPeerStore,
    PeerEntry,
    select_peers,
)
from aptmesh_tracker.wire import Peer, ScrapeStats, compact_address

IH = b"i" * 20


def peer(n: int, ip: str = "10.0.0.1") -> Peer:
    return Peer(b"%020d" % n, compact_address(ip, 6000 + n))


def test_counts_and_events() -> None:
    clock = FakeClock()
    store = MemoryPeerStore(ttl=60, clock=clock)
    store.announce(IH, peer(1), seeder=True, event="started", numwant=50)
    result = store.announce(IH, peer(2), seeder=False, event="started", numwant=50)
    assert (result.complete, result.incomplete) == (1, 1)
    assert result.peers == (peer(1),)  # never the requester itself
    result = store.announce(IH, peer(2), seeder=True, event="completed", numwant=50)
    assert (result.complete, result.incomplete) == (2, 0)
    assert result.peers == ()  # a seeder is not given other seeders
    assert store.scrape(IH).downloaded == 1
    store.announce(IH, peer(1), seeder=True, event="stopped", numwant=50)
    assert (store.scrape(IH).complete, store.peer_counts()) == (1, (1, 0))
    store.announce(IH, peer(2), seeder=True, event="stopped", numwant=50)
    assert store.swarm_count() == 0


def test_completed_count_outlives_the_swarm_but_its_peers_do_not() -> None:
    clock = FakeClock()
    store = MemoryPeerStore(ttl=60, clock=clock)
    store.announce(IH, peer(1), seeder=True, event="completed", numwant=0)
    store.announce(IH, peer(1), seeder=True, event="stopped", numwant=0)
    assert (store.swarm_count(), store.peer_counts()) == (0, (0, 0))
    assert store.scrape(IH) == ScrapeStats(0, 0, 1)
    # the next swarm carries the count on, and leaves it behind when it expires
    store.announce(IH, peer(2), seeder=False, event="started", numwant=0)
    store.announce(IH, peer(2), seeder=True, event="completed", numwant=0)
    assert store.scrape(IH) == ScrapeStats(1, 0, 2)
    clock.advance(61)
    assert store.expire() == 1
    assert (store.swarm_count(), store.scrape(IH)) == (0, ScrapeStats(0, 0, 2))
    # a swarm nobody completed leaves nothing behind
    store.announce(b"n" * 20, peer(3), seeder=False, event="started", numwant=0)
    store.announce(b"n" * 20, peer(3), seeder=False, event="stopped", numwant=0)
    assert store.scrape(b"n" * 20) == ScrapeStats(0, 0, 0)


def completed_then_gone(store: MemoryPeerStore, info_hash: bytes) -> None:
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


def test_same_peer_id_from_another_address_is_another_peer() -> None:
    store = MemoryPeerStore(ttl=60, clock=FakeClock())
    store.announce(IH, peer(1, "10.0.0.1"), seeder=False, event="none", numwant=0)
    store.announce(
        IH,
        Peer(peer(1).peer_id, compact_address("10.9.9.9", 1)),
        seeder=False,
        event="stopped",
        numwant=0,
    )
    assert store.scrape(IH).incomplete == 1


def test_silent_peers_expire() -> None:
    clock = FakeClock()
    store = MemoryPeerStore(ttl=60, clock=clock)
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


def test_selection_is_bounded_and_uniform_sample() -> None:
    peers = {p.peer_id + p.address: PeerEntry(p, False, 100.0) for p in map(peer, range(100))}
    chosen = select_peers(
        peers, b"nobody", seeding=False, numwant=10, now=0.0, rng=random.Random(1)
    )
    assert len(set(chosen)) == 10
    assert select_peers(peers, b"x", seeding=False, numwant=0, now=0.0, rng=random.Random()) == ()
    assert (
        len(select_peers(peers, b"x", seeding=False, numwant=500, now=0.0, rng=random.Random()))
        == 100
    )
