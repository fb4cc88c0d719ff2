"""Where a package file's bytes come from: the swarm or the upstream, chosen by pure policies.

Both sources fill a `Download` in order (`begin`, then `write`): the swarm with
pieces libtorrent has verified, the upstream with an HTTP response body. The
policies decide from plain facts; the caller does the I/O (the tracker lookup,
the fetch) and counts every fall back to the upstream with its reason.

Inside a swarm download the upstream is a BEP 19 web seed of last resort:
`web_seed_reason` adds it only when the swarm is not keeping up, so the
mirror sends about one copy to a site, not one per edge; `web_seed_share`
says how many bytes of each piece to count as the upstream's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from aptmesh_edge.downloads import Download, DownloadFailed, Expected
from aptmesh_edge.urls import Resource


class Source(Protocol):
    name: str

    async def fetch(self, urls: list[str], download: Download) -> None:
        """Appends the file's bytes to `download` from `download.written` on; raises
        DownloadFailed (or SwarmUnavailable) if it cannot."""
        ...


class SwarmUnavailable(DownloadFailed):
    """The swarm cannot deliver (yet); `reason` is the fallback metric's label."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(502, text)
        self.reason = reason


class TorrentState(enum.Enum):
    NOT_LOOKED_UP = "not_looked_up"
    FOUND = "found"
    ABSENT = "absent"
    TRACKER_UNREACHABLE = "tracker_unreachable"


@dataclass(frozen=True)
class Facts:
    swarm_enabled: bool
    swarm_min_size: int
    expected: Expected | None
    torrent: TorrentState = TorrentState.NOT_LOOKED_UP


@dataclass(frozen=True)
class Choice:
    source: str  # "swarm", "upstream", or "lookup" (ask the tracker, then decide again)
    fallback_reason: str = ""  # why not the swarm (empty when there is nothing to count)


def choose_source(facts: Facts) -> Choice:
    """Swarm for large verified files whose torrent the index knows; upstream otherwise."""
    if not facts.swarm_enabled:
        return Choice("upstream", "swarm_disabled")
    if facts.expected is None:
        return Choice("upstream", "unverified")
    if facts.expected.size < facts.swarm_min_size:
        return Choice("upstream", "below_threshold")
    if facts.torrent is TorrentState.NOT_LOOKED_UP:
        return Choice("lookup")
    if facts.torrent is TorrentState.TRACKER_UNREACHABLE:
        return Choice("upstream", "tracker_unreachable")
    if facts.torrent is TorrentState.ABSENT:
        return Choice("upstream", "no_torrent")
    return Choice("swarm")


def after_fetch(source: str, expected: Expected | None, swarm_min_size: int) -> str:
    """What the swarm side does with a file just committed to the cache: keep seeding what
    came from the swarm ("seed"), make, publish and seed a torrent for a large verified file
    that came from the upstream ("make_torrent"), or nothing ("")."""
    if expected is None:
        return ""
    if source == "swarm":
        return "seed"
    if expected.size >= swarm_min_size:
        return "make_torrent"
    return ""


# Streaming a swarm download to the client in order: rarest-first alone, until the client has
# waited STREAM_PATIENCE seconds for its next piece; then the next pieces (at least
# STREAM_MIN_PIECES, about STREAM_WINDOW_BYTES) are asked for by deadline. Deadlines from the
# first second made every edge pull the same next pieces from the seeder at once, which sent
# each ~2 times (bench/swarm/RESULTS.md).
STREAM_PATIENCE = 2.0
STREAM_WINDOW_BYTES = 1024**2
STREAM_MIN_PIECES = 4


def stream_window(waited: float, piece_length: int) -> int:
    """How many of the client's next pieces to ask for by deadline after it has waited `waited`
    seconds for the first of them: none before STREAM_PATIENCE."""
    if waited < STREAM_PATIENCE:
        return 0
    return max(STREAM_MIN_PIECES, -(-STREAM_WINDOW_BYTES // piece_length))


@dataclass(frozen=True)
class WebSeedPolicy:
    """When a swarm download also pulls from the upstream (its BEP 19 web seed)."""

    delay: float = 2.0  # seconds peers get to connect and ramp up before anything is judged
    stall: float = 2.0  # seconds without any new piece
    min_rate: float = 1024**2  # bytes per second from peers, judged after 2 x delay


@dataclass(frozen=True)
class SwarmProgress:
    """What a running swarm download looks like now (from libtorrent's counters)."""

    elapsed: float  # seconds since the download started
    since_piece: float  # seconds since the last piece arrived (or since the start)
    peers: int  # connected BitTorrent peers
    seeds: int  # of them, holding the whole file
    peer_rate: float  # bytes per second from peers
    done: int  # verified bytes held
    size: int


def web_seed_reason(progress: SwarmProgress, policy: WebSeedPolicy) -> str:
    """Why the upstream should join the download as web seed now; "" while the swarm keeps
    up. The reason is the fallback metric's label."""
    if progress.done >= progress.size or progress.elapsed < policy.delay:
        return ""
    if progress.peers == 0:
        return "webseed_no_peers"
    if progress.seeds == 0:
        return "webseed_no_seed"  # no connected peer holds the whole file
    if progress.since_piece >= policy.stall:
        return "webseed_stalled"
    if progress.elapsed >= 2 * policy.delay and progress.peer_rate < policy.min_rate:
        return "webseed_slow"
    return ""


def web_seed_share(written: int, written_web: int, piece: int, peer: int, web: int) -> int:
    """How many bytes of the next `piece` bytes (after `written`, of which `written_web` were
    counted as the web seed's) to count as the web seed's, given libtorrent's totals `peer` and
    `web`. Blocks of one piece may come from both, and libtorrent counts bytes, not pieces: the
    bytes written are split in the proportion of the totals, never more than was received."""
    total = peer + web
    if web <= 0 or total <= 0:
        return 0
    target = min(web, (written + piece) * web // total)
    return max(0, min(piece, target - written_web))


class SwarmFetcher(Protocol):
    """What the package service needs from the swarm side (`aptmesh_edge.swarmfetch`)."""

    async def lookup(self, expected: Expected) -> TorrentState: ...

    def source_for(self, resource: Resource, expected: Expected) -> Source: ...

    async def after_upstream(self, resource: Resource, expected: Expected, blob_path: str) -> None:
        """A verified file came from the upstream: make, publish and seed its torrent."""
        ...

    async def seed_cached(self, resource: Resource, expected: Expected, blob_path: str) -> None:
        """A file came from the swarm and was committed: keep seeding it from the cache."""
        ...
