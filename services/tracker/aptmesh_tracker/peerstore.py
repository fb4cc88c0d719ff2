"""Swarms in memory: who announced which infohash, until when.

Theory of operation. A swarm is keyed by the 20-byte infohash a client
announced; the v1 and the truncated v2 infohash of one hybrid torrent are two
swarms, as BEP 52 clients see them. A peer is keyed by its peer id *and* its
compact address, so a client cannot push another host's entry out by reusing
its peer id. Every announce renews the peer for `ttl` seconds; `expire()`
(run periodically by the app) drops silent peers and empty swarms, and peer
selection skips entries already past their time. Time comes from an injected
clock, so tests move it instead of sleeping. One writer: the event loop.

Completed counts (BEP 48 `downloaded`) outlive their swarm. When a swarm
empties, its peers are freed and only its count moves to a table of retired
counts, from which a later first announce takes it back; a scrape of an
infohash with no swarm answers from that table. The counts live in memory
only: a restart starts every torrent at 0. The table can be capped, evicting
the count whose swarm emptied longest ago: an open tracker needs the cap (any
infohash may be announced), a tracker limited to the index does not (it only
counts indexed torrents, and the index never drops a record).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aptmesh_tracker.wire import Event, Peer, ScrapeStats

Clock = Callable[[], float]

# Retired counts an open tracker keeps: about 140 bytes each, so some 14 MB.
MAX_RETIRED_COUNTS = 100_000


@dataclass(slots=True)
class PeerEntry:
    peer: Peer
    seeder: bool
    expires: float


@dataclass(slots=True)
class Swarm:
    peers: dict[bytes, PeerEntry] = field(default_factory=dict)
    seeders: int = 0
    downloaded: int = 0  # completed events seen (BEP 48 `downloaded`)

    @property
    def leechers(self) -> int:
        return len(self.peers) - self.seeders


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    complete: int
    incomplete: int
    peers: tuple[Peer, ...]


def select_peers(
    peers: Mapping[bytes, PeerEntry],
    requester: bytes,
    *,
    seeding: bool,
    numwant: int,
    now: float,
    rng: random.Random,
) -> tuple[Peer, ...]:
    """The peers to hand out: live ones other than the requester, at most `numwant`.

    A seeder gets only leechers (another seeder has nothing to give it); when
    there are more candidates than wanted, a uniform random sample spreads
    connections across the swarm instead of piling onto the oldest peers.
    """
    if numwant <= 0:
        return ()
    candidates = [
        entry.peer
        for key, entry in peers.items()
        if key != requester and entry.expires > now and not (seeding and entry.seeder)
    ]
    if len(candidates) > numwant:
        return tuple(rng.sample(candidates, numwant))
    return tuple(candidates)


class PeerStore:
    def __init__(
        self,
        ttl: float,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        *,
        max_retired: int | None = MAX_RETIRED_COUNTS,
    ) -> None:
        """`max_retired` caps the retired completed counts; None leaves them uncapped."""
        self._ttl = ttl
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy
        self._swarms: dict[bytes, Swarm] = {}
        # infohash -> completed count of a swarm that emptied, oldest first
        self._retired: dict[bytes, int] = {}
        self._max_retired = max_retired

    def _drop_swarm(self, info_hash: bytes, swarm: Swarm) -> None:
        """Frees an empty swarm, keeping its completed count if it has one."""
        del self._swarms[info_hash]
        if swarm.downloaded == 0 or self._max_retired == 0:
            return
        if self._max_retired is not None and len(self._retired) >= self._max_retired:
            del self._retired[next(iter(self._retired))]
        self._retired[info_hash] = swarm.downloaded

    def announce(
        self, info_hash: bytes, peer: Peer, *, seeder: bool, event: Event, numwant: int
    ) -> AnnounceResult:
        now = self._clock()
        key = peer.peer_id + peer.address
        swarm = self._swarms.get(info_hash)
        if event == "stopped":
            if swarm is None:
                return AnnounceResult(0, 0, ())
            gone = swarm.peers.pop(key, None)
            if gone is not None and gone.seeder:
                swarm.seeders -= 1
            if not swarm.peers:
                self._drop_swarm(info_hash, swarm)
            return AnnounceResult(swarm.seeders, swarm.leechers, ())
        if swarm is None:
            downloaded = self._retired.pop(info_hash, 0)
            swarm = self._swarms[info_hash] = Swarm(downloaded=downloaded)
        entry = swarm.peers.get(key)
        if entry is None:
            swarm.peers[key] = PeerEntry(peer, seeder, now + self._ttl)
            if seeder:
                swarm.seeders += 1
        else:
            if entry.seeder != seeder:
                swarm.seeders += 1 if seeder else -1
                entry.seeder = seeder
            entry.expires = now + self._ttl
        if event == "completed":
            swarm.downloaded += 1
        chosen = select_peers(
            swarm.peers, key, seeding=seeder, numwant=numwant, now=now, rng=self._rng
        )
        return AnnounceResult(swarm.seeders, swarm.leechers, chosen)

    def scrape(self, info_hash: bytes) -> ScrapeStats:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return ScrapeStats(0, 0, self._retired.get(info_hash, 0))
        return ScrapeStats(swarm.seeders, swarm.leechers, swarm.downloaded)

    def expire(self) -> int:
        """Drops peers past their time and empty swarms (not their counts); returns peers gone."""
        now = self._clock()
        dropped = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            stale = [key for key, entry in swarm.peers.items() if entry.expires <= now]
            for key in stale:
                if swarm.peers.pop(key).seeder:
                    swarm.seeders -= 1
            dropped += len(stale)
            if not swarm.peers:
                self._drop_swarm(info_hash, swarm)
        return dropped

    def swarm_count(self) -> int:
        return len(self._swarms)

    def swarm_hashes(self) -> list[bytes]:
        """The infohashes that have at least one peer (peers past their time until expire())."""
        return list(self._swarms)

    def peer_counts(self) -> tuple[int, int]:
        """(seeders, leechers) over all swarms."""
        swarms = list(self._swarms.values())
        seeders = sum(s.seeders for s in swarms)
        return seeders, sum(len(s.peers) for s in swarms) - seeders
