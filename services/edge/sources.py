"""Where a package file's bytes come from: the swarm or the upstream, chosen by a pure policy.

Both sources fill a `Download` in order (`begin`, then `write`): the swarm with
pieces libtorrent has verified, the upstream with an HTTP response body. The
policy decides from plain facts; the caller does the I/O (the tracker lookup,
the fetch) and counts every fall back to the upstream with its reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from aptmesh.edge.downloads import Download, DownloadFailed, Expected
from aptmesh.edge.urls import Resource


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


class SwarmFetcher(Protocol):
    """What the package service needs from the swarm side (`aptmesh.edge.swarmfetch`)."""

    async def lookup(self, expected: Expected) -> TorrentState: ...

    def source_for(self, resource: Resource, expected: Expected) -> Source: ...

    async def after_upstream(self, resource: Resource, expected: Expected, blob_path: str) -> None:
        """A verified file came from the upstream: make, publish and seed its torrent."""
        ...

    async def seed_cached(self, resource: Resource, expected: Expected, blob_path: str) -> None:
        """A file came from the swarm and was committed: keep seeding it from the cache."""
        ...
