"""Announce and scrape logic: requests in, responses out, over the peer store.

The frontend parses and writes; this decides. Whether an infohash may be
tracked is a callable (the index's allow-list, or "anything" for an open
tracker), and so is whether an announcer's address is a registered edge or
seed box (the registry's), so the logic does not know where either lives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aptmesh_tracker.metrics import TrackerMetrics
from aptmesh_tracker.peerstore import PeerStore
from aptmesh_tracker.wire import (
    AnnounceRequest,
    AnnounceResponse,
    Peer,
    ScrapeRequest,
    ScrapeResponse,
    TrackerRequestError,
    compact_address,
    normal_ip,
)

UNTRACKED = "torrent is not tracked here (not in the aptmesh index)"


@dataclass(frozen=True)
class Policy:
    interval: int
    min_interval: int
    numwant_default: int
    numwant_max: int


class Tracker:
    def __init__(
        self,
        peers: PeerStore,
        is_tracked: Callable[[bytes], bool] | None,
        policy: Policy,
        metrics: TrackerMetrics,
        is_registered: Callable[[str], bool] = lambda ip: False,
    ) -> None:
        """`is_tracked` None makes an open tracker; `is_registered` tells whether an IP
        (normalised, `wire.normal_ip`) belongs to a live edge or seed box."""
        self._peers = peers
        self._is_tracked = is_tracked
        self._is_registered = is_registered
        self._policy = policy
        self._metrics = metrics

    def announce(self, request: AnnounceRequest, ip: str) -> AnnounceResponse:
        if self._is_tracked is not None and not self._is_tracked(request.info_hash):
            raise TrackerRequestError("untracked", UNTRACKED)
        policy = self._policy
        wanted = policy.numwant_default if request.numwant is None else request.numwant
        result = self._peers.announce(
            request.info_hash,
            Peer(request.peer_id, compact_address(ip, request.port)),
            seeder=request.left == 0,
            event=request.event,
            numwant=min(wanted, policy.numwant_max),
            registered=self._is_registered(normal_ip(ip)),
        )
        self._metrics.announces[request.event].inc()
        if result.refused is not None:
            self._metrics.refused_peers[result.refused].inc()
        return AnnounceResponse(
            policy.interval, policy.min_interval, result.complete, result.incomplete, result.peers
        )

    def scrape(self, request: ScrapeRequest) -> ScrapeResponse:
        self._metrics.scrapes.inc()
        is_tracked = self._is_tracked
        return ScrapeResponse(
            tuple(
                (info_hash, self._peers.scrape(info_hash))
                for info_hash in request.info_hashes
                if is_tracked is None or is_tracked(info_hash)
            )
        )

    def expire(self) -> int:
        dropped = self._peers.expire()
        self._metrics.expired_peers.inc(dropped)
        return dropped
