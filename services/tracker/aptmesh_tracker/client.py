"""The async client of the tracker's gRPC services, for the seeder, the edge and tools.

Every call has a deadline. gRPC errors are translated here, once, into a small
hierarchy that says whose problem it is:

- `IndexUnavailable`: the tracker cannot be reached or did not answer in time
  (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED): retry later;
- `NotFound`: the index has no such record;
- `Rejected`: the tracker refused the call (bad token, invalid record...);
  retrying the same call will not help.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc

from aptmesh import collection as col
from aptmesh.grpcserver import bearer_metadata
from aptmesh.v1 import (
    collection_pb2,
    collection_pb2_grpc,
    index_pb2,
    index_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from aptmesh_tracker.records import (
    Edge,
    PackageRecord,
    Site,
    edge_from_proto,
    edge_to_proto,
    record_from_proto,
    record_to_proto,
)
from aptmesh_tracker.status import MeshStatus, from_proto

BATCH = 1000  # the server's default max_batch; larger lookups are split
# gRPC's default reconnect backoff grows to 120 s: after an outage of a minute a client
# stayed away 30-40 s after the tracker was back (edges and seed boxes missing from the
# registry). The tracker is one host the client must reach; retrying its address every
# two seconds at most costs nothing.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

# Every call may be retried on another replica when one answers UNAVAILABLE or its connection
# drops (a replica killed or rolled): the tracker's calls are idempotent (a publish of a record
# the index holds answers created=False; a registration renews the lease), so a retry after a
# reply that was lost changes nothing. Attempts and backoff stay within the calls' deadlines.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


class TargetError(ValueError):
    """A tracker gRPC target that cannot be used (a configuration mistake)."""


def channel_target(target: str) -> tuple[str, str]:
    """The gRPC target and load-balancing policy for `target`.

    `target` is one address (`host:port`, or any gRPC target such as `dns:///tracker:50051`,
    which with a headless Service resolves to every replica) or several replicas' addresses
    separated by commas (`10.0.0.1:50051,10.0.0.2:50051`). Several addresses need no load
    balancer: they become one `ipv4:`/`ipv6:` target whose calls go round robin to the
    replicas that are up. gRPC resolves a list only of IP literals; a list naming hosts is
    refused here, with what to do instead.
    """
    parts = [part.strip() for part in target.split(",") if part.strip()]
    if not parts:
        raise TargetError("tracker gRPC target: empty")
    if len(parts) == 1:
        return parts[0], "round_robin" if parts[0].startswith("dns:") else "pick_first"
    families = set()
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise TargetError(f"tracker gRPC target {part!r}: not host:port")
        host = host.removeprefix("[").removesuffix("]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise TargetError(
                f"tracker gRPC target {part!r}: a list of replicas takes IP addresses "
                "(for names, give one dns:/// target that resolves to every replica)"
            ) from None
        families.add(address.version)
    if len(families) > 1:
        raise TargetError(f"tracker gRPC target {target!r}: mixes IPv4 and IPv6 addresses")
    scheme = "ipv4" if families == {4} else "ipv6"
    return f"{scheme}:{','.join(parts)}", "round_robin"


def target_problem(target: str) -> str:
    """Why `target` cannot be used as a tracker gRPC target, or '' (for config validation)."""
    try:
        channel_target(target)
    except TargetError as exc:
        return str(exc)
    return ""


def channel_options(policy: str) -> list[tuple[str, str | int]]:
    config = {
        "loadBalancingConfig": [{policy: {}}],
        "methodConfig": [{"name": [{}], "retryPolicy": _RETRY_POLICY}],
    }
    return [
        *CHANNEL_OPTIONS,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
    ]


class TrackerClientError(Exception):
    """A call to the tracker failed; `code` is the gRPC status code's name."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class IndexUnavailable(TrackerClientError):
    """The tracker is unreachable or too slow; worth retrying later."""


class NotFound(TrackerClientError):
    """The index has no record for that SHA-256."""


class Rejected(TrackerClientError):
    """The tracker refused the call (authentication, invalid argument, ...)."""


class Conflict(Rejected):
    """A collection changed (or exists, or does not) unlike the caller expected."""


_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@contextlib.asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        text = f"{action}: {exc.details() or code.name}"
        if code in _RETRYABLE:
            raise IndexUnavailable(text, code.name) from None
        if code == grpc.StatusCode.NOT_FOUND:
            raise NotFound(text, code.name) from None
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            raise Conflict(text, code.name) from None
        raise Rejected(text, code.name) from None


def renew_after(lease_seconds: int) -> float:
    """Renew a registration at a third of its lease (two chances before it ends)."""
    return max(1.0, lease_seconds / 3)


@dataclass(frozen=True)
class BatchResult:
    records: dict[str, PackageRecord]
    missing: tuple[str, ...]


class TrackerClient:
    """`target` is the tracker's gRPC address, or several replicas' (see `channel_target`);
    `token` is needed only to write."""

    def __init__(self, target: str, *, token: str = "", timeout: float = 5.0) -> None:
        resolved, policy = channel_target(target)
        self._channel = grpc.aio.insecure_channel(resolved, options=channel_options(policy))
        self._index = index_pb2_grpc.IndexServiceStub(self._channel)
        self._registry = registry_pb2_grpc.EdgeRegistryServiceStub(self._channel)
        self._collections = collection_pb2_grpc.CollectionServiceStub(self._channel)
        self._status = status_pb2_grpc.MeshStatusServiceStub(self._channel)
        self._metadata = bearer_metadata(token) if token else ()
        self._timeout = timeout

    async def publish(self, record: PackageRecord, *, deadline: float | None = None) -> bool:
        """Publishes a record; True when the index had no record for its SHA-256."""
        request = index_pb2.PublishPackageRequest(record=record_to_proto(record))
        async with _translated(f"publishing {record.name}"):
            response = await self._index.PublishPackage(
                request, timeout=deadline or self._timeout, metadata=self._metadata
            )
        return response.created

    async def get(self, sha256: str, *, deadline: float | None = None) -> PackageRecord:
        """The record of a SHA-256; raises NotFound when the index has none."""
        async with _translated(f"looking up {sha256}"):
            response = await self._index.GetPackage(
                index_pb2.GetPackageRequest(sha256=sha256), timeout=deadline or self._timeout
            )
        return record_from_proto(response.record)

    async def get_many(
        self, sha256s: Sequence[str], *, deadline: float | None = None
    ) -> BatchResult:
        """Records of many SHA-256s (split into calls of BATCH); unknown ones in `missing`."""
        records: dict[str, PackageRecord] = {}
        missing: list[str] = []
        unique = list(dict.fromkeys(sha256s))
        for start in range(0, len(unique), BATCH):
            request = index_pb2.BatchGetPackagesRequest(sha256s=unique[start : start + BATCH])
            async with _translated(f"looking up {len(request.sha256s)} packages"):
                response = await self._index.BatchGetPackages(
                    request, timeout=deadline or self._timeout
                )
            records.update((r.sha256, record_from_proto(r)) for r in response.records)
            missing.extend(response.missing)
        return BatchResult(records, tuple(missing))

    async def register_edge(self, edge: Edge, *, deadline: float | None = None) -> int:
        """Registers or renews an edge or a seed box (`Edge.seed_box`); returns the lease in
        seconds (renew at `renew_after` of it)."""
        request = registry_pb2.RegisterEdgeRequest(edge=edge_to_proto(edge))
        async with _translated(f"registering {edge.kind} {edge.id}"):
            response = await self._registry.RegisterEdge(
                request, timeout=deadline or self._timeout, metadata=self._metadata
            )
        return response.lease_seconds

    async def list_site(self, zone: str = "", *, deadline: float | None = None) -> Site:
        """Live edges, those in `zone` first, and the live seed boxes' summed uplink."""
        async with _translated("listing edges"):
            response = await self._registry.ListEdges(
                registry_pb2.ListEdgesRequest(zone=zone), timeout=deadline or self._timeout
            )
        return Site(
            edges=[edge_from_proto(e) for e in response.edges],
            seed_upload_capacity=response.seed_upload_capacity,
            peers_epoch=response.peers_epoch,
        )

    async def list_edges(self, zone: str = "", *, deadline: float | None = None) -> list[Edge]:
        """Live edges, those in `zone` first."""
        return (await self.list_site(zone, deadline=deadline)).edges

    # -- collections ------------------------------------------------------------------

    async def put_collection(
        self, spec: col.CollectionSpec, *, expected_version: int | None = None
    ) -> col.Collection:
        """Defines (`expected_version` 0) or updates a collection; raises Conflict."""
        request = collection_pb2.PutCollectionRequest(spec=col.spec_to_proto(spec))
        if expected_version is not None:
            request.expected_version = expected_version
        async with _translated(f"storing collection {spec.name}"):
            response = await self._collections.PutCollection(
                request, timeout=self._timeout, metadata=self._metadata
            )
        return col.collection_from_proto(response.collection)

    async def get_collection(self, name: str) -> col.Collection:
        async with _translated(f"reading collection {name}"):
            response = await self._collections.GetCollection(
                collection_pb2.GetCollectionRequest(name=name), timeout=self._timeout
            )
        return col.collection_from_proto(response.collection)

    async def list_collections(self, zone: str = "") -> list[col.Collection]:
        """Every collection, or those that target `zone`."""
        async with _translated("listing collections"):
            response = await self._collections.ListCollections(
                collection_pb2.ListCollectionsRequest(zone=zone), timeout=self._timeout
            )
        return [col.collection_from_proto(c) for c in response.collections]

    async def delete_collection(self, name: str) -> None:
        async with _translated(f"deleting collection {name}"):
            await self._collections.DeleteCollection(
                collection_pb2.DeleteCollectionRequest(name=name),
                timeout=self._timeout,
                metadata=self._metadata,
            )

    async def report_collection(self, status: col.EdgeStatus) -> None:
        request = collection_pb2.ReportCollectionStatusRequest(status=col.status_to_proto(status))
        async with _translated(f"reporting collection {status.collection}"):
            await self._collections.ReportCollectionStatus(
                request, timeout=self._timeout, metadata=self._metadata
            )

    async def collection_status(self, name: str) -> tuple[col.Collection, list[col.EdgeStatus]]:
        """The collection and one status per live targeted edge."""
        async with _translated(f"reading the status of collection {name}"):
            response = await self._collections.GetCollectionStatus(
                collection_pb2.GetCollectionStatusRequest(name=name), timeout=self._timeout
            )
        edges = [col.status_from_proto(s) for s in response.edges]
        return col.collection_from_proto(response.collection), edges

    async def mesh_status(
        self, max_swarms: int = 0, *, deadline: float | None = None
    ) -> MeshStatus:
        """The mesh as the tracker sees it; `max_swarms` 0 takes the server's default."""
        async with _translated("reading the mesh status"):
            response = await self._status.GetMeshStatus(
                status_pb2.GetMeshStatusRequest(max_swarms=max_swarms),
                timeout=deadline or self._timeout,
            )
        return from_proto(response)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> TrackerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
