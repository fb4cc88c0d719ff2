"""Publishing held files to the tracker's index.

`Publisher` is what a sync needs from the index: which records it lacks, and
publishing one; and what the seeder's swarm needs from the edge registry: the
uplinks of the live edges, and registering this seeder as a seed box (so the
registry can sum the seed boxes' uplinks). `TrackerPublisher` talks to the
tracker over gRPC (through `aptmesh_tracker.client`, which translates gRPC
errors); `MemoryPublisher` is the in-memory fake for tests; `NoPublisher` is
for a seeder configured without a tracker (it seeds, but nobody learns about
it from the index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aptmesh_seeder.state import HeldFile
from aptmesh_tracker.client import TrackerClient, TrackerClientError
from aptmesh_tracker.records import Edge, PackageRecord


class PublishError(Exception):
    """The index could not be reached or refused a record."""


def record_of(held: HeldFile) -> PackageRecord:
    return PackageRecord(
        sha256=held.sha256,
        size=held.size,
        name=held.name,
        info_hash_v1=held.info_hash_v1,
        info_hash_v2=held.info_hash_v2,
        piece_length=held.piece_length,
        torrent=held.torrent,
        upstream_urls=held.upstream_urls,
    )


@dataclass(frozen=True)
class SiteView:
    """What the seeder reads from the registry: the live edges' uplinks (0: unknown) and the
    tracker's peer-store epoch (a change: the tracker lost its swarms)."""

    uplinks: list[int]
    peers_epoch: str = ""


class Publisher(Protocol):
    async def missing(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these the index has no record of."""

    async def publish(self, record: PackageRecord) -> bool:
        """Publishes a record; True when it was new to the index."""

    async def edge_uplinks(self) -> list[int] | None:
        """The upload capacities the live edges (never seed boxes) reported (0: unknown);
        None when the registry cannot be reached."""

    async def site(self) -> SiteView | None:
        """The registry's view (`SiteView`); None when it cannot be reached."""

    async def register_seed_box(self, box: Edge) -> int:
        """Registers or renews this seeder as a seed box (`box.seed_box` is set); returns the
        lease in seconds. Raises PublishError."""


class TrackerPublisher:
    def __init__(self, client: TrackerClient) -> None:
        self.client = client

    async def missing(self, sha256s: Sequence[str]) -> set[str]:
        if not sha256s:
            return set()
        try:
            result = await self.client.get_many(sha256s)
        except TrackerClientError as exc:
            raise PublishError(str(exc)) from None
        return set(result.missing)

    async def publish(self, record: PackageRecord) -> bool:
        try:
            return await self.client.publish(record)
        except TrackerClientError as exc:
            raise PublishError(str(exc)) from None

    async def edge_uplinks(self) -> list[int] | None:
        view = await self.site()
        return None if view is None else view.uplinks

    async def site(self) -> SiteView | None:
        try:
            site = await self.client.list_site()
        except TrackerClientError:
            return None
        return SiteView([edge.upload_capacity for edge in site.edges], site.peers_epoch)

    async def register_seed_box(self, box: Edge) -> int:
        try:
            return await self.client.register_edge(box)
        except TrackerClientError as exc:
            raise PublishError(str(exc)) from None

    async def close(self) -> None:
        await self.client.close()


class MemoryPublisher:
    """An index in a dict; `fail` makes every call raise PublishError (tracker down).
    `uplinks` are the edges' uplinks; `seed_boxes` the seed boxes registered, by id, and
    `register_calls` counts the calls to register one (failed or not); `peers_epoch` is the
    registry's (change it to play a tracker restart)."""

    def __init__(self, lease_seconds: int = 60) -> None:
        self.records: dict[str, PackageRecord] = {}
        self.uplinks: list[int] = []
        self.seed_boxes: dict[str, Edge] = {}
        self.register_calls = 0
        self.lease_seconds = lease_seconds
        self.fail = False
        self.peers_epoch = "epoch-1"

    async def missing(self, sha256s: Sequence[str]) -> set[str]:
        if self.fail:
            raise PublishError("looking up packages: the fake index is down")
        return {sha for sha in sha256s if sha not in self.records}

    async def publish(self, record: PackageRecord) -> bool:
        if self.fail:
            raise PublishError(f"publishing {record.name}: the fake index is down")
        created = record.sha256 not in self.records
        self.records[record.sha256] = record
        return created

    async def edge_uplinks(self) -> list[int] | None:
        return None if self.fail else list(self.uplinks)

    async def site(self) -> SiteView | None:
        return None if self.fail else SiteView(list(self.uplinks), self.peers_epoch)

    async def register_seed_box(self, box: Edge) -> int:
        self.register_calls += 1
        if self.fail:
            raise PublishError(f"registering seed box {box.id}: the fake registry is down")
        self.seed_boxes[box.id] = box
        return self.lease_seconds


class NoPublisher:
    async def missing(self, sha256s: Sequence[str]) -> set[str]:
        return set()

    async def publish(self, record: PackageRecord) -> bool:
        return False

    async def edge_uplinks(self) -> list[int] | None:
        return None

    async def site(self) -> SiteView | None:
        return None

    async def register_seed_box(self, box: Edge) -> int:
        raise PublishError(f"registering seed box {box.id}: no tracker configured")
