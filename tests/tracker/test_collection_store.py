"""The collections' contract, run against every backend (the `open_backend` fixture), and the
gRPC service over a real tracker: tokens, versions, bad specs, merged status."""

from __future__ import annotations

import pytest

from aptmesh import collection as col
from aptmesh.testing import FakeClock
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import Conflict, NotFound, Rejected, TrackerClient
from aptmesh_tracker.collection_store import VersionConflict
from aptmesh_tracker.records import Edge
from tests.tracker.conftest import Backends

SPEC = col.CollectionSpec(
    name="lab",
    sources=("http://deb.example.org/debian stable main",),
    packages=("hello", "curl (>= 7.0)"),
    with_dependencies=True,
    files=(col.PlainFile("boot.iso", "a" * 64, 5, ("http://files.example.org/boot.iso",)),),
    zones=("lab-a",),
)


def test_versions_conflicts_and_delete(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).collections
    assert store.get("lab") is None and store.all() == []
    first = store.put(SPEC, expected_version=0)
    assert first.version == 1 and first.spec == SPEC and first.updated_at == clock()
    with pytest.raises(VersionConflict, match="exists already"):
        store.put(SPEC, expected_version=0)
    clock.advance(5)
    second = store.put(col.CollectionSpec("lab", zones=()), expected_version=1)
    assert second.version == 2 and store.get("lab") == second
    with pytest.raises(VersionConflict, match="version 2, not 1"):
        store.put(SPEC, expected_version=1)
    assert store.put(SPEC).version == 3  # no expectation: last writer wins
    store.put(col.CollectionSpec("other", zones=("lab-b",)))
    assert [c.name for c in store.all()] == ["lab", "other"]
    assert [c.name for c in store.all("lab-b")] == ["other"]
    assert [c.name for c in store.all("nowhere")] == []
    assert store.delete("lab") and not store.delete("lab")
    with pytest.raises(VersionConflict, match="does not exist"):
        store.put(SPEC, expected_version=4)


def test_reports_replace_and_go_with_their_collection(open_backend: Backends) -> None:
    clock = FakeClock()
    store = open_backend(clock).collections
    status = col.EdgeStatus("e1", "lab-a", "lab", 1, 3, 1, 300, 100, errors=("x: unknown",))
    assert not store.report(status)  # no such collection: dropped
    store.put(SPEC)
    assert store.report(status)
    clock.advance(1)
    done = col.EdgeStatus("e1", "lab-a", "lab", 1, 3, 3, 300, 300, complete_at=clock())
    assert store.report(done)
    assert store.report(col.EdgeStatus("e0", "lab-a", "lab", 1))
    reports = store.reports("lab")
    assert [r.edge_id for r in reports] == ["e0", "e1"]
    assert reports[1].complete and reports[1].reported_at == clock()
    store.delete("lab")
    store.put(SPEC)
    assert store.reports("lab") == []


async def test_the_service_over_grpc(tracker: RunningTracker, client: TrackerClient) -> None:
    async with TrackerClient(tracker.grpc_target) as anonymous:
        with pytest.raises(Rejected, match="bearer token"):
            await anonymous.put_collection(SPEC)
        with pytest.raises(NotFound):
            await anonymous.get_collection("lab")
    stored = await client.put_collection(SPEC, expected_version=0)
    assert stored.version == 1
    with pytest.raises(Conflict, match="exists already"):
        await client.put_collection(SPEC, expected_version=0)
    with pytest.raises(Rejected, match="sha256 must be 64 hex digits"):
        await client.put_collection(
            col.CollectionSpec("bad", files=(col.PlainFile("f", "xyz", 1, ("http://h/f",)),))
        )
    with pytest.raises(Rejected, match="'a \\(>= \\)': .*not a Debian version"):
        await client.put_collection(col.CollectionSpec("bad", packages=("a (>= )",)))
    assert await client.get_collection("lab") == stored
    assert [c.name for c in await client.list_collections("lab-a")] == ["lab"]
    await client.register_edge(Edge("e1", "http://e1:3142", "lab-a"))
    await client.register_edge(Edge("e2", "http://e2:3142", "lab-a"))
    await client.register_edge(Edge("x", "http://x:3142", "elsewhere"))
    await client.report_collection(col.EdgeStatus("e1", "lab-a", "lab", 1, 2, 2, 10, 10))
    got, edges = await client.collection_status("lab")
    assert got == stored
    assert [(e.edge_id, e.complete) for e in edges] == [("e1", True), ("e2", False)]
    await client.delete_collection("lab")
    with pytest.raises(NotFound):
        await client.collection_status("lab")
