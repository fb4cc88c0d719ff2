"""The mesh as the tracker sees it (`MeshStatusService`): values, health rule, proto forms.

A registration's health is read from its lease: the tracker grants leases of
`lease_seconds` and every registration renews every `renew_every` seconds
(`client.renew_after` of the lease), so its last renewal was `lease_seconds`
before its lease ends. A registration that has gone two renewal intervals
without renewing has missed one: it is LATE, still listed until its lease
ends (then it is gone).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from aptmesh.v1 import status_pb2
from aptmesh_tracker.convergence import GenerationServed, SuiteConvergence
from aptmesh_tracker.records import Edge, edge_from_proto, edge_to_proto
from aptmesh_tracker.swarms import TorrentSwarm

DEFAULT_SWARMS = 100
MAX_SWARMS = 1000


class Health(enum.Enum):
    HEALTHY = "healthy"
    LATE = "late"


_HEALTH_TO_PROTO = {
    Health.HEALTHY: status_pb2.LEASE_HEALTH_HEALTHY,
    Health.LATE: status_pb2.LEASE_HEALTH_LATE,
}
_HEALTH_FROM_PROTO = {v: k for k, v in _HEALTH_TO_PROTO.items()}


@dataclass(frozen=True)
class Registration:
    edge: Edge
    last_renewal: float  # wall-clock seconds
    lease_end: float
    health: Health


def registration(
    edge: Edge, lease_end: float, *, lease_seconds: float, renew_every: float, now: float
) -> Registration:
    last = lease_end - lease_seconds
    late = now - last > 2 * renew_every
    return Registration(edge, last, lease_end, Health.LATE if late else Health.HEALTHY)


@dataclass(frozen=True)
class Swarm:
    """A torrent's swarm with its record's name ("" when the index has none)."""

    torrent: TorrentSwarm
    name: str


@dataclass(frozen=True)
class MeshStatus:
    time: float
    tracker_version: str
    lease_seconds: int
    edges: tuple[Registration, ...]
    seed_boxes: tuple[Registration, ...]
    index_records: int
    torrents_with_peers: int
    seeders: int
    leechers: int
    swarms: tuple[Swarm, ...]  # the most peers first, possibly cut
    suites: tuple[SuiteConvergence, ...] = ()  # by suite (convergence.converge)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def _registration_to_proto(reg: Registration) -> status_pb2.Registration:
    return status_pb2.Registration(
        edge=edge_to_proto(reg.edge),
        last_renewal_time=_timestamp(reg.last_renewal),
        lease_end_time=_timestamp(reg.lease_end),
        health=_HEALTH_TO_PROTO[reg.health],
    )


def _registration_from_proto(message: status_pb2.Registration) -> Registration:
    return Registration(
        edge_from_proto(message.edge),
        _seconds(message.last_renewal_time),
        _seconds(message.lease_end_time),
        _HEALTH_FROM_PROTO.get(message.health, Health.LATE),
    )


def to_proto(status: MeshStatus) -> status_pb2.GetMeshStatusResponse:
    return status_pb2.GetMeshStatusResponse(
        time=_timestamp(status.time),
        tracker_version=status.tracker_version,
        lease_seconds=status.lease_seconds,
        edges=[_registration_to_proto(r) for r in status.edges],
        seed_boxes=[_registration_to_proto(r) for r in status.seed_boxes],
        index_records=status.index_records,
        torrents_with_peers=status.torrents_with_peers,
        seeders=status.seeders,
        leechers=status.leechers,
        swarms=[
            status_pb2.TorrentSwarm(
                sha256=s.torrent.sha256,
                name=s.name,
                info_hashes=[h.hex() for h in s.torrent.info_hashes],
                seeders=s.torrent.seeders,
                leechers=s.torrent.leechers,
            )
            for s in status.swarms
        ],
        suites=[
            status_pb2.SuiteConvergence(
                suite=suite.suite,
                edges=suite.edges,
                generations=[
                    status_pb2.GenerationServed(
                        date=_timestamp(g.date) if g.date else None,
                        hash=g.hash,
                        first_seen_time=_timestamp(g.first_seen),
                        edges=g.edges,
                    )
                    for g in suite.generations
                ],
            )
            for suite in status.suites
        ],
    )


def from_proto(message: status_pb2.GetMeshStatusResponse) -> MeshStatus:
    return MeshStatus(
        time=_seconds(message.time),
        tracker_version=message.tracker_version,
        lease_seconds=message.lease_seconds,
        edges=tuple(_registration_from_proto(r) for r in message.edges),
        seed_boxes=tuple(_registration_from_proto(r) for r in message.seed_boxes),
        index_records=message.index_records,
        torrents_with_peers=message.torrents_with_peers,
        seeders=message.seeders,
        leechers=message.leechers,
        swarms=tuple(
            Swarm(
                TorrentSwarm(
                    s.sha256,
                    tuple(bytes.fromhex(h) for h in s.info_hashes),
                    s.seeders,
                    s.leechers,
                ),
                s.name,
            )
            for s in message.swarms
        ),
        suites=tuple(
            SuiteConvergence(
                suite.suite,
                suite.edges,
                tuple(
                    GenerationServed(
                        int(_seconds(g.date)) if g.HasField("date") else 0,
                        g.hash,
                        int(_seconds(g.first_seen_time)),
                        g.edges,
                    )
                    for g in suite.generations
                ),
            )
            for suite in message.suites
        ),
    )
