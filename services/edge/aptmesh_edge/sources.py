"""Where a file's bytes come from: one `Source` protocol, and the pure policies that choose.

Every source (the upstream over HTTP in upstream.py, the swarm in
swarmfetch.py, this edge's parent in the zone in site.py) has one shape:
`fetch(resource, download)` appends the file's bytes to a `Download` from
`download.written` on, through its check (checked.py), and `begin`s it. A
source that cannot deliver raises `SourceUnavailable` with the fallback reason
to count (the next source resumes at the download's end, or from zero after a
rewind); any other `DownloadFailed` fails the download. The policies decide
from plain facts; the package logic (packages.py) does the I/O.

Inside a swarm download the upstream is a BEP 19 web seed of last resort:
`web_seed_reason` adds it only when the swarm is not keeping up, so the
mirror sends about one copy to a site, not one per edge; `web_seed_share`
says how many bytes of each piece to count as the upstream's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aptmesh.debian import FileHash
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import FallbackReason, SourceKind
from aptmesh_edge.urls import Resource

if TYPE_CHECKING:
    from aptmesh_edge.downloads import Download


class Source(Protocol):
    """Fills a download with one file's bytes from one place."""

    @property
    def kind(self) -> SourceKind: ...

    async def fetch(self, resource: Resource, download: Download) -> None:
        """Appends the file's bytes to `download` from `download.written` on and begins it;
        raises SourceUnavailable (try the next source) or DownloadFailed."""
        ...


class SourceUnavailable(DownloadFailed):
    """The source cannot deliver (yet); `reason` is the fallback metric's label (None: a
    failure not counted as a fallback, such as a parent edge that failed, counted by site.py)."""

    def __init__(self, reason: FallbackReason | None, text: str) -> None:
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
    expected: FileHash | None
    torrent: TorrentState = TorrentState.NOT_LOOKED_UP


class Step(enum.Enum):
    """What to do next for a package file's bytes."""

    SWARM = "swarm"
    UPSTREAM = "upstream"
    LOOKUP = "lookup"  # ask the tracker, then decide again


@dataclass(frozen=True)
class Choice:
    step: Step
    fallback_reason: FallbackReason | None = None  # why not the swarm (None: nothing to count)


def choose_source(facts: Facts) -> Choice:
    """Swarm for large verified files whose torrent the index knows; upstream otherwise."""
    if not facts.swarm_enabled:
        return Choice(Step.UPSTREAM, FallbackReason.SWARM_DISABLED)
    if facts.expected is None:
        return Choice(Step.UPSTREAM, FallbackReason.UNVERIFIED)
    if facts.expected.size < facts.swarm_min_size:
        return Choice(Step.UPSTREAM, FallbackReason.BELOW_THRESHOLD)
    if facts.torrent is TorrentState.NOT_LOOKED_UP:
        return Choice(Step.LOOKUP)
    if facts.torrent is TorrentState.TRACKER_UNREACHABLE:
        return Choice(Step.UPSTREAM, FallbackReason.TRACKER_UNREACHABLE)
    if facts.torrent is TorrentState.ABSENT:
        return Choice(Step.UPSTREAM, FallbackReason.NO_TORRENT)
    return Choice(Step.SWARM)


class AfterCommit(enum.Enum):
    """What the swarm side does with a file just committed to the cache."""

    NOTHING = "nothing"
    SEED = "seed"  # it came from the swarm: keep seeding it
    MAKE_TORRENT = "make_torrent"  # a large file from the upstream: make, publish and seed


def after_fetch(source: SourceKind, expected: FileHash | None, swarm_min_size: int) -> AfterCommit:
    """What the swarm side does with a file just committed to the cache."""
    if expected is None:
        return AfterCommit.NOTHING
    if source is SourceKind.SWARM:
        return AfterCommit.SEED
    if expected.size >= swarm_min_size:
        return AfterCommit.MAKE_TORRENT
    return AfterCommit.NOTHING


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


def web_seed_reason(progress: SwarmProgress, policy: WebSeedPolicy) -> FallbackReason | None:
    """Why the upstream should join the download as web seed now; None while the swarm keeps
    up."""
    if progress.done >= progress.size or progress.elapsed < policy.delay:
        return None
    if progress.peers == 0:
        return FallbackReason.WEBSEED_NO_PEERS
    if progress.seeds == 0:
        return FallbackReason.WEBSEED_NO_SEED  # no connected peer holds the whole file
    if progress.since_piece >= policy.stall:
        return FallbackReason.WEBSEED_STALLED
    if progress.elapsed >= 2 * policy.delay and progress.peer_rate < policy.min_rate:
        return FallbackReason.WEBSEED_SLOW
    return None


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

    async def lookup(self, expected: FileHash) -> TorrentState: ...

    def source_for(self, expected: FileHash) -> Source: ...

    async def after_upstream(self, resource: Resource, expected: FileHash, blob_path: str) -> None:
        """A verified file came from the upstream: make, publish and seed its torrent."""
        ...

    async def seed_cached(self, resource: Resource, expected: FileHash, blob_path: str) -> None:
        """A file came from the swarm and was committed: keep seeding it from the cache."""
        ...
