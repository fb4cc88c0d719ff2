"""Swarms: who announced which infohash, until when; the `PeerStore` interface and its
in-memory implementation.

The interface (`PeerStore`) is what the tracker's logic needs and all a new backend
(e.g. Redis, for several replicas) implements: `announce`, `scrape`, `expire` and two
gauges. The logic decides whether an announcer is *registered* (its address belongs to
a live edge or seed box of the registry) and passes that in; the store applies the
bounds and the selection rule below. One writer: the event loop.

Theory of operation (`MemoryPeerStore`). A swarm is keyed by the 20-byte infohash a
client announced; the v1 and the truncated v2 infohash of one hybrid torrent are two
swarms, as BEP 52 clients see them. A peer is keyed by its peer id *and* its compact
address, so a client cannot push another host's entry out by reusing its peer id.
Every announce renews the peer for `ttl` seconds; `expire()` (run periodically by the
app) drops silent peers and empty swarms, and selection skips entries already past
their time. Time comes from an injected clock, so tests move it instead of sleeping.

Bounds (`PeerLimits`, configured from `TrackerConfig`). A *new* anonymous peer is not
stored when its address already has `per_address_swarm` peers in that swarm or
`per_address` peers in all swarms, when its swarm has `per_swarm` peers, or when the
store holds `total` peers; the announce is still answered (the client gets peers, and
the refusal is reported in `AnnounceResult.refused` for the metrics). Peers already
stored are always renewed. Registered peers are never refused: their number is bounded
by the registry, which takes a token.

Selection costs O(numwant), never O(swarm). Each swarm keeps its peers in four
`_Group`s (registered or anonymous, seeder or leecher), each a list with an index, so a
peer is added, removed or drawn at random in O(1). A leecher is offered every live
registered peer first (up to numwant), then a uniform sample of the anonymous ones; a
seeder gets only leechers (another seeder has nothing to give it), registered ones
first. However many fake peers a flood stores, it cannot push a registered seed box or
edge out of a leecher's answer.

Completed counts (BEP 48 `downloaded`) outlive their swarm. When a swarm empties, its
peers are freed and only its count moves to a table of retired counts, from which a
later first announce takes it back; a scrape of an infohash with no swarm answers from
that table. The counts live in memory only: a restart starts every torrent at 0. The
table can be capped, evicting the count whose swarm emptied longest ago: an open tracker
needs the cap (any infohash may be announced), a tracker limited to the index does not.

Peers live in memory, so a restarted tracker knows none, and BitTorrent
clients announce only at their interval (30 minutes). `epoch`, random per
store, names this set of swarms: the registry hands it to every seeder and
edge (`peers_epoch`), and one that sees it change announces all its torrents
at once, so the swarms are back within seconds. A store whose peers outlive
the process (Redis) keeps its epoch with them.
"""

from __future__ import annotations

import enum
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aptmesh_tracker.wire import Event, Peer, ScrapeStats

Clock = Callable[[], float]

# Retired counts an open tracker keeps: about 140 bytes each, so some 14 MB.
MAX_RETIRED_COUNTS = 100_000
# Extra random draws per announce, to make up for entries past their time that expire()
# has not swept yet (they are skipped, not handed out).
_SPARE_DRAWS = 8


class Limit(enum.Enum):
    """Which bound refused to store a new peer (the metric's `limit` label)."""

    ADDRESS_SWARM = "address_swarm"
    ADDRESS = "address"
    SWARM = "swarm"
    TOTAL = "total"


@dataclass(frozen=True)
class PeerLimits:
    """Most anonymous peers stored: from one address in one swarm, from one address in all
    swarms, in one swarm, and in all. Defaults are TrackerConfig's."""

    per_address_swarm: int = 8
    per_address: int = 1_000
    per_swarm: int = 2_000
    total: int = 200_000


@dataclass(slots=True)  # not frozen: made per announce (see wire.AnnounceRequest)
class AnnounceResult:
    complete: int
    incomplete: int
    peers: tuple[Peer, ...]
    refused: Limit | None = None  # set when the announcer was answered but not stored


class PeerStore(Protocol):
    """What the tracker's logic needs from a peer store (see the module docstring)."""

    def announce(
        self,
        info_hash: bytes,
        peer: Peer,
        *,
        seeder: bool,
        event: Event,
        numwant: int,
        registered: bool = False,
    ) -> AnnounceResult:
        """Records (or, on `stopped`, drops) the peer and returns up to `numwant` others,
        chosen by the rule above, in O(numwant)."""
        ...

    def scrape(self, info_hash: bytes) -> ScrapeStats: ...

    def expire(self) -> int:
        """Drops peers past their time and empty swarms (not their counts); returns how many
        peers went."""
        ...

    def swarm_count(self) -> int:
        """Swarms with a peer, as of the last `expire()` at the latest (a gauge: a backend
        may count more recently, never less)."""
        ...

    def peer_counts(self) -> tuple[int, int]:
        """(seeders, leechers) over all swarms, as recent as `swarm_count`."""
        ...

    def swarm_hashes(self) -> list[bytes]:
        """The infohashes of the swarms with a peer, as recent as `swarm_count` (no I/O)."""
        ...

    @property
    def epoch(self) -> str:
        """Names the swarms the store holds; changes when they were lost (module docstring).
        Read without I/O: the registry answers it on every call."""
        ...


@dataclass(slots=True)
class PeerEntry:
    peer: Peer
    seeder: bool
    registered: bool
    expires: float


class _Group:
    """Peers of one kind in one swarm: O(1) add, remove, and draw at random."""

    __slots__ = ("_index", "_keys")

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._index: dict[bytes, int] = {}

    @property
    def keys(self) -> list[bytes]:
        """The keys, in no meaningful order; read them, never change them."""
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes) -> None:
        self._index[key] = len(self._keys)
        self._keys.append(key)

    def remove(self, key: bytes) -> None:
        at = self._index.pop(key)
        last = self._keys.pop()
        if last != key:
            self._keys[at] = last
            self._index[last] = at


_NO_KEYS: list[bytes] = []  # never added to


@dataclass(slots=True)
class Swarm:
    peers: dict[bytes, PeerEntry] = field(default_factory=dict)
    # (registered, seeder) -> the keys of that kind
    groups: dict[tuple[bool, bool], _Group] = field(
        default_factory=lambda: {(r, s): _Group() for r in (True, False) for s in (True, False)}
    )
    per_address: dict[bytes, int] = field(default_factory=dict)  # anonymous peers by IP
    seeders: int = 0
    downloaded: int = 0  # completed events seen (BEP 48 `downloaded`)

    @property
    def leechers(self) -> int:
        return len(self.peers) - self.seeders


def _ip(peer: Peer) -> bytes:
    return peer.address[:-2]  # the compact address without its port


class MemoryPeerStore:
    def __init__(
        self,
        ttl: float,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        *,
        max_retired: int | None = MAX_RETIRED_COUNTS,
        limits: PeerLimits | None = None,
    ) -> None:
        """`max_retired` caps the retired completed counts; None leaves them uncapped."""
        self._ttl = ttl
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy
        self._limits = limits or PeerLimits()
        self._swarms: dict[bytes, Swarm] = {}
        # infohash -> completed count of a swarm that emptied, oldest first
        self._retired: dict[bytes, int] = {}
        self._max_retired = max_retired
        self._anonymous = 0  # anonymous peers in all swarms
        self._per_address: dict[bytes, int] = {}  # anonymous peers by IP, all swarms
        self._seeders = 0
        self._peers = 0
        self._epoch = secrets.token_hex(8)  # a new store has lost every peer (module docstring)

    @property
    def epoch(self) -> str:
        return self._epoch

    # --- bookkeeping: every add and remove of an entry goes through these two ---------------

    def _add(self, swarm: Swarm, key: bytes, entry: PeerEntry) -> None:
        swarm.peers[key] = entry
        swarm.groups[entry.registered, entry.seeder].add(key)
        self._peers += 1
        if entry.seeder:
            swarm.seeders += 1
            self._seeders += 1
        if not entry.registered:
            ip = _ip(entry.peer)
            swarm.per_address[ip] = swarm.per_address.get(ip, 0) + 1
            self._per_address[ip] = self._per_address.get(ip, 0) + 1
            self._anonymous += 1

    def _remove(self, swarm: Swarm, key: bytes) -> PeerEntry:
        entry = swarm.peers.pop(key)
        swarm.groups[entry.registered, entry.seeder].remove(key)
        self._peers -= 1
        if entry.seeder:
            swarm.seeders -= 1
            self._seeders -= 1
        if not entry.registered:
            ip = _ip(entry.peer)
            for counts in (swarm.per_address, self._per_address):
                left = counts[ip] - 1
                if left:
                    counts[ip] = left
                else:
                    del counts[ip]
            self._anonymous -= 1
        return entry

    def _drop_swarm(self, info_hash: bytes, swarm: Swarm) -> None:
        """Frees an empty swarm, keeping its completed count if it has one."""
        del self._swarms[info_hash]
        if swarm.downloaded == 0 or self._max_retired == 0:
            return
        if self._max_retired is not None and len(self._retired) >= self._max_retired:
            del self._retired[next(iter(self._retired))]
        self._retired[info_hash] = swarm.downloaded

    def _refusal(self, swarm: Swarm, ip: bytes) -> Limit | None:
        """The bound a new anonymous peer from `ip` would break, if any."""
        limits = self._limits
        if swarm.per_address.get(ip, 0) >= limits.per_address_swarm:
            return Limit.ADDRESS_SWARM
        if self._per_address.get(ip, 0) >= limits.per_address:
            return Limit.ADDRESS
        if len(swarm.peers) >= limits.per_swarm:
            return Limit.SWARM
        if self._anonymous >= limits.total:
            return Limit.TOTAL
        return None

    # --- the interface --------------------------------------------------------------------

    def announce(
        self,
        info_hash: bytes,
        peer: Peer,
        *,
        seeder: bool,
        event: Event,
        numwant: int,
        registered: bool = False,
    ) -> AnnounceResult:
        now = self._clock()
        key = peer.peer_id + peer.address
        swarm = self._swarms.get(info_hash)
        if event == "stopped":
            if swarm is None:
                return AnnounceResult(0, 0, ())
            if key in swarm.peers:
                self._remove(swarm, key)
            if not swarm.peers:
                self._drop_swarm(info_hash, swarm)
            return AnnounceResult(swarm.seeders, swarm.leechers, ())
        fresh = swarm is None
        if swarm is None:
            swarm = Swarm()
        entry = swarm.peers.get(key)
        refused = None
        if entry is None:
            refused = None if registered else self._refusal(swarm, _ip(peer))
            if refused is None:
                self._add(swarm, key, PeerEntry(peer, seeder, registered, now + self._ttl))
        elif (entry.seeder, entry.registered) != (seeder, registered):
            self._remove(swarm, key)  # changed kind: filed again, never refused
            self._add(swarm, key, PeerEntry(peer, seeder, registered, now + self._ttl))
        else:
            entry.expires = now + self._ttl
        if refused is None:  # only stored peers make swarms and count completions
            if fresh:
                swarm.downloaded = self._retired.pop(info_hash, 0)
                self._swarms[info_hash] = swarm
            if event == "completed":
                swarm.downloaded += 1
        chosen = self._select(swarm, key, seeding=seeder, numwant=numwant, now=now)
        return AnnounceResult(swarm.seeders, swarm.leechers, chosen, refused)

    def _select(
        self, swarm: Swarm, requester: bytes, *, seeding: bool, numwant: int, now: float
    ) -> tuple[Peer, ...]:
        """Registered peers first, then a uniform sample of anonymous ones; O(numwant)."""
        chosen: list[Peer] = []
        groups = swarm.groups
        for registered in (True, False):
            wanted = numwant - len(chosen)
            if wanted <= 0:
                break
            if seeding:  # a seeder gets only leechers
                first, second = groups[registered, False].keys, _NO_KEYS
            else:
                first, second = groups[registered, True].keys, groups[registered, False].keys
            split = len(first)
            total = split + len(second)
            if total == 0:
                continue
            picks: Iterable[int] = (
                range(total)
                if total <= wanted
                else self._rng.sample(range(total), min(total, wanted + _SPARE_DRAWS))
            )
            for i in picks:
                key = first[i] if i < split else second[i - split]
                entry = swarm.peers[key]
                if key != requester and entry.expires > now:
                    chosen.append(entry.peer)
                    if len(chosen) == numwant:
                        break
        return tuple(chosen)

    def scrape(self, info_hash: bytes) -> ScrapeStats:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return ScrapeStats(0, 0, self._retired.get(info_hash, 0))
        return ScrapeStats(swarm.seeders, swarm.leechers, swarm.downloaded)

    def expire(self) -> int:
        now = self._clock()
        dropped = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            stale = [key for key, entry in swarm.peers.items() if entry.expires <= now]
            for key in stale:
                self._remove(swarm, key)
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
        return self._seeders, self._peers - self._seeders
