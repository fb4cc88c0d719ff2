"""Swarms per torrent (pure) and the registration health rule of the mesh status."""

from __future__ import annotations

from aptmesh_tracker.records import Edge
from aptmesh_tracker.status import Health, registration
from aptmesh_tracker.swarms import SwarmCounts, by_torrent, count_torrents

V1, V2, OTHER = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
INDEX = {V1: "a" * 64, V2: "a" * 64}


def test_a_hybrid_torrents_two_swarms_are_one_torrent() -> None:
    assert count_torrents([V1, V2], INDEX.get) == 1
    assert count_torrents([V1, V2, OTHER], INDEX.get) == 2
    [hybrid, foreign] = by_torrent(
        [SwarmCounts(V1, 2, 1), SwarmCounts(V2, 1, 3), SwarmCounts(OTHER, 1, 0)], INDEX.get
    )
    # The larger count of each role, never the sum of both swarms.
    assert (hybrid.sha256, hybrid.seeders, hybrid.leechers) == ("a" * 64, 2, 3)
    assert hybrid.info_hashes == (V1, V2)
    assert (foreign.sha256, foreign.info_hashes, foreign.peers) == ("", (OTHER,), 1)


def test_most_peers_first() -> None:
    torrents = by_torrent([SwarmCounts(OTHER, 1, 0), SwarmCounts(V1, 5, 5)], INDEX.get)
    assert [t.peers for t in torrents] == [10, 1]


def test_a_registration_is_late_after_missing_a_renewal() -> None:
    edge = Edge("e", "http://e:3142", "z")
    # Lease 90 s, renewed every 30 s: renewed at 1000, the lease ends at 1090.
    on_time = registration(edge, 1090.0, lease_seconds=90, renew_every=30, now=1059.0)
    assert (on_time.health, on_time.last_renewal) == (Health.HEALTHY, 1000.0)
    late = registration(edge, 1090.0, lease_seconds=90, renew_every=30, now=1061.0)
    assert late.health == Health.LATE
