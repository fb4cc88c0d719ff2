"""Swarms counted per torrent, not per infohash (pure: values in, values out).

A hybrid torrent is announced under two 20-byte infohashes, its v1 one and
its truncated v2 one, so the peer store holds two swarms for it. The index
pairs them (`Store.torrent_of` maps either hash to the record's SHA-256); an
infohash the index does not know (an open tracker's foreign torrents) is a
torrent of its own. A hybrid client announces both hashes and a v1-only
client only the v1 one, so a torrent's seeders (and leechers) are the larger
of its two swarms' counts: exact when all its peers are hybrid, a lower bound
otherwise, and never the double count a sum would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

TorrentOf = Callable[[bytes], "str | None"]


@dataclass(frozen=True)
class SwarmCounts:
    """One infohash's swarm as the peer store counts it."""

    info_hash: bytes
    seeders: int
    leechers: int


@dataclass(frozen=True)
class TorrentSwarm:
    """One torrent's peers: `sha256` is its index record's, "" when the index has none."""

    sha256: str
    info_hashes: tuple[bytes, ...]
    seeders: int
    leechers: int

    @property
    def peers(self) -> int:
        return self.seeders + self.leechers


def torrent_key(info_hash: bytes, torrent_of: TorrentOf) -> str:
    """The record's SHA-256, or for an unknown infohash a key of its own (never a SHA-256)."""
    return torrent_of(info_hash) or f"infohash:{info_hash.hex()}"


def count_torrents(info_hashes: Iterable[bytes], torrent_of: TorrentOf) -> int:
    """How many torrents the given swarms belong to."""
    return len({torrent_key(h, torrent_of) for h in info_hashes})


def by_torrent(swarms: Iterable[SwarmCounts], torrent_of: TorrentOf) -> list[TorrentSwarm]:
    """The swarms grouped by torrent, the most peers first (then by key, for a stable order)."""
    groups: dict[str, list[SwarmCounts]] = {}
    for swarm in swarms:
        groups.setdefault(torrent_key(swarm.info_hash, torrent_of), []).append(swarm)
    torrents = [
        TorrentSwarm(
            sha256="" if key.startswith("infohash:") else key,
            info_hashes=tuple(sorted(s.info_hash for s in group)),
            seeders=max(s.seeders for s in group),
            leechers=max(s.leechers for s in group),
        )
        for key, group in groups.items()
    ]
    return sorted(torrents, key=lambda t: (-t.peers, t.sha256, t.info_hashes))
