"""The tracker's domain values (index records, edges, seed boxes) and their protobuf forms.

The servicers and the client convert at the boundary with the functions here;
everything behind them (store, logic) works on these frozen dataclasses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from aptmesh.v1 import index_pb2, registry_pb2


def tracker_hashes(info_hash_v1: str, info_hash_v2: str) -> tuple[bytes, bytes]:
    """The two 20-byte infohashes BitTorrent clients announce for a torrent's hex infohashes:
    the v1 one, and the v2 one truncated (BEP 52)."""
    return bytes.fromhex(info_hash_v1), bytes.fromhex(info_hash_v2[:40])


@dataclass(frozen=True)
class PackageRecord:
    sha256: str  # lower-case hex, as in Packages
    size: int
    name: str
    info_hash_v1: str  # lower-case hex SHA-1
    info_hash_v2: str  # lower-case hex SHA-256 (full)
    piece_length: int
    torrent: bytes
    upstream_urls: tuple[str, ...] = ()

    def tracker_hashes(self) -> tuple[bytes, bytes]:
        """The two 20-byte infohashes BitTorrent clients announce (v1, truncated v2)."""
        return tracker_hashes(self.info_hash_v1, self.info_hash_v2)

    def same_torrent(self, other: PackageRecord) -> bool:
        return (
            self.size,
            self.name,
            self.info_hash_v1,
            self.info_hash_v2,
            self.piece_length,
            self.torrent,
        ) == (
            other.size,
            other.name,
            other.info_hash_v1,
            other.info_hash_v2,
            other.piece_length,
            other.torrent,
        )


# The registry's id rule (edges and seed boxes share one namespace of ids).
EDGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
EDGE_ID_RULE = "1-128 letters, digits or . _ : @ - (starting with a letter or digit)"


# Bounds of what an edge reports of its generations (RegisterEdgeRequest), checked by the
# registry like the other fields: an edge serves a few suites, never hundreds.
MAX_GENERATIONS = 64
MAX_SUITE_CHARS = 512
GENERATION_HASH = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class SuiteGeneration:
    """One suite's generation as an edge serves it (registry.proto SuiteGeneration)."""

    suite: str  # the edge's suite key: origin key / suite directory
    date: int  # InRelease Date, seconds since the epoch; 0: none
    hash: str  # first 16 hex digits of the signed Release's SHA-256
    first_seen: int = 0  # when the edge first verified it (its clock, epoch seconds)

    @property
    def order(self) -> tuple[int, str]:
        """Newer sorts higher: by Date, then (one Date, two republishes) by hash."""
        return (self.date, self.hash)


@dataclass(frozen=True)
class Edge:
    """A registration: an edge cache, or with `seed_box` a seeder (never listed as an edge;
    its url may be empty)."""

    id: str
    url: str
    zone: str = ""
    upload_capacity: int = 0  # BitTorrent uplink in bytes per second; 0: unknown
    seed_box: bool = False
    generations: tuple[SuiteGeneration, ...] = ()
    # The IP the registration came from, as the registry saw it (never what the caller
    # says): the tracker offers peers announcing from it first. '' when unknown. An
    # observation, not part of what the edge registered: equality ignores it.
    address: str = field(default="", compare=False)

    @property
    def kind(self) -> str:
        """What it is, for messages: "edge" or "seed box"."""
        return "seed box" if self.seed_box else "edge"


@dataclass(frozen=True)
class Site:
    """What the registry lists: the live edges (the caller's zone first) and the summed uplink
    of the live seed boxes in bytes per second (0: none is live, or one's is unknown)."""

    edges: list[Edge]
    seed_upload_capacity: int = 0
    # The tracker's peer-store epoch: a change means it lost its swarms, announce again. Not
    # part of what the site is (two listings of the same edges are equal across a restart).
    peers_epoch: str = field(default="", compare=False)


def record_to_proto(record: PackageRecord) -> index_pb2.PackageRecord:
    return index_pb2.PackageRecord(
        sha256=record.sha256,
        size=record.size,
        name=record.name,
        info_hash_v1=record.info_hash_v1,
        info_hash_v2=record.info_hash_v2,
        piece_length=record.piece_length,
        torrent=record.torrent,
        upstream_urls=list(record.upstream_urls),
    )


def record_from_proto(message: index_pb2.PackageRecord) -> PackageRecord:
    return PackageRecord(
        sha256=message.sha256,
        size=message.size,
        name=message.name,
        info_hash_v1=message.info_hash_v1,
        info_hash_v2=message.info_hash_v2,
        piece_length=message.piece_length,
        torrent=message.torrent,
        upstream_urls=tuple(message.upstream_urls),
    )


def edge_to_proto(edge: Edge) -> registry_pb2.Edge:
    return registry_pb2.Edge(
        id=edge.id,
        url=edge.url,
        zone=edge.zone,
        upload_capacity=edge.upload_capacity,
        seed_box=edge.seed_box,
        generations=[
            registry_pb2.SuiteGeneration(
                suite=g.suite, date=g.date, hash=g.hash, first_seen=g.first_seen
            )
            for g in edge.generations
        ],
    )


def edge_from_proto(message: registry_pb2.Edge) -> Edge:
    return Edge(
        id=message.id,
        url=message.url,
        zone=message.zone,
        upload_capacity=message.upload_capacity,
        seed_box=message.seed_box,
        generations=tuple(
            SuiteGeneration(g.suite, g.date, g.hash, g.first_seen) for g in message.generations
        ),
    )


def generations_to_json(generations: tuple[SuiteGeneration, ...]) -> str:
    """How the lease tables store an edge's generations (one text column)."""
    return json.dumps([[g.suite, g.date, g.hash, g.first_seen] for g in generations])


def generations_from_json(text: str | None) -> tuple[SuiteGeneration, ...]:
    if not text:
        return ()
    return tuple(
        SuiteGeneration(str(suite), int(date), str(digest), int(first))
        for suite, date, digest, first in json.loads(text)
    )
