"""Edges of one zone converge on a suite's newest generation (issue 14; convergence.py).

Two real edges of one zone registered with a real tracker, in front of the fixture
repository. One edge (no freeze window) sees a republish first; the other (a long freeze
window) learns from the registry's listing that a newer generation exists and revalidates
the suite's InRelease at once: it serves the new generation within the documented bound
(one listing interval, `EDGES_EVERY`, plus one InRelease fetch), and a client of it updates
to the whole new generation. The tracker's convergence view and metrics follow.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from aptmesh.debrepo import DebRepo, KiB, PackageSpec, apt_env
from aptmesh.testing import wait_until
from aptmesh_edge.app import EDGES_EVERY, RunningEdge
from aptmesh_edge.convergence import behind, reported
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.convergence import converge
from aptmesh_tracker.records import Edge
from tests.edge.conftest import HOST, EdgeFactory, get, metric, prefix_url
from tests.fixtures.tracker import TOKEN

ZONE = "site"
NEW = PackageSpec("aptmesh-converged", "1.0-1", 4 * KiB)
# One listing interval plus one InRelease fetch from the loopback repository, with room for
# a loaded machine: what the module docstring of aptmesh_edge.convergence promises.
BOUND = EDGES_EVERY + 10.0


def _ago(**delta: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(**delta)


async def _zone_edge(
    make_edge: EdgeFactory, tracker: RunningTracker, **changes: Any
) -> RunningEdge:
    return await make_edge(
        tracker_grpc=tracker.grpc_target,
        tracker_announce=(tracker.announce_url,),
        publish_token=TOKEN,
        zone=ZONE,
        **changes,
    )


async def _inrelease(client: aiohttp.ClientSession, edge: RunningEdge, repo: DebRepo) -> bytes:
    status, body, _ = await get(client, prefix_url(edge, repo.INRELEASE))
    assert status == 200, body
    return body


def _generations(tracker: RunningTracker) -> list[tuple[int, int]]:
    """(Date, edges) of each generation of the one suite, as the tracker derives them."""
    suites = converge(tracker.stores.registry.live_edges(ZONE))
    return [(g.date, g.edges) for s in suites for g in s.generations]


async def test_an_edge_catches_up_on_the_generation_another_edge_of_its_zone_serves(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    old_day = _ago(hours=2)
    debrepo.resign(date=old_day)
    first = debrepo.read(debrepo.INRELEASE)
    fast = await _zone_edge(make_edge, tracker, index_freeze_seconds=0.0)
    slow = await _zone_edge(make_edge, tracker, index_freeze_seconds=3600.0)
    assert await _inrelease(client, fast, debrepo) == first
    assert await _inrelease(client, slow, debrepo) == first
    old_date = int(old_day.timestamp())
    await wait_until(
        lambda: _generations(tracker) == [(old_date, 2)], what="both edges report generation 1"
    )

    debrepo.add_package(NEW)
    new_day = _ago(hours=1)
    debrepo.resign(date=new_day)
    new = debrepo.read(debrepo.INRELEASE)
    assert await _inrelease(client, slow, debrepo) == first  # frozen for an hour
    assert await _inrelease(client, fast, debrepo) == new
    seen = time.monotonic()
    new_date = int(new_day.timestamp())
    # The fast edge renews at once with its new generation: the tracker sees both.
    await wait_until(
        lambda: _generations(tracker) == [(new_date, 1), (old_date, 1)],
        what="the tracker to see the new generation at one edge of two",
    )

    # Without any client request, the slow edge's listing loop finds it behind and
    # revalidates: within the bound it serves the new InRelease.
    async def slow_serves_new() -> bool:
        return await _inrelease(client, slow, debrepo) == new

    await wait_until(slow_serves_new, within=BOUND, what="the slow edge to converge")
    assert time.monotonic() - seen < BOUND
    assert metric(slow, "aptmesh_edge_zone_revalidations_total") >= 1
    assert metric(fast, "aptmesh_edge_zone_revalidations_total") == 0  # it was never behind
    await wait_until(
        lambda: _generations(tracker) == [(new_date, 2)], what="the tracker to see convergence"
    )

    # A client of the slow edge gets the whole new generation (its Packages lists NEW).
    apt = apt_env(
        tmp_path / "apt",
        debrepo.sources_line(f"http://{HOST}/debian"),
        {"Acquire::http::Proxy": slow.http_url},
    )
    await asyncio.to_thread(apt.run, "apt-get", "update")
    (lists,) = apt.lists.glob("*_InRelease")
    assert lists.read_bytes() == new
    assert any(f"Package: {NEW.name}\n" in p.read_text() for p in apt.lists.glob("*_Packages"))


def test_only_a_newer_date_of_the_same_zone_counts_as_behind(tmp_path: Path) -> None:
    """The rule of `behind`, on values: other zones, seed boxes, the edge itself and a
    same-Date generation with another hash (unordered) never make an edge revalidate."""
    from aptmesh.debian import Generation
    from aptmesh_edge.trust import Served
    from aptmesh_edge.urls import Origin, Resource

    release = Resource(Origin("http", HOST, 80), "debian/dists/stable/InRelease", ())
    date = datetime(2026, 1, 1, tzinfo=UTC)
    mine = Served("k", Generation(date, "a" * 64), 1.0, release)
    [ours] = reported([mine])
    assert (ours.suite, ours.date, ours.hash) == ("k", int(date.timestamp()), "a" * 16)
    assert reported([Served("x" * 513, Generation(date, "a" * 64), 1.0, release)]) == ()
    newer = reported([Served("k", Generation(date + timedelta(seconds=1), "b" * 64), 2.0, release)])
    same_date = reported([Served("k", Generation(date, "c" * 64), 2.0, release)])

    def edge(edge_id: str, zone: str = ZONE, **kw: Any) -> Edge:
        return Edge(edge_id, f"http://{edge_id}:3142", zone, **kw)

    assert behind([mine], "me", ZONE, [edge("other", generations=newer)]) == [mine]
    assert behind([mine], "me", ZONE, [edge("other", "elsewhere", generations=newer)]) == []
    assert behind([mine], "me", ZONE, [edge("me", generations=newer)]) == []
    assert behind([mine], "me", ZONE, [edge("box", seed_box=True, generations=newer)]) == []
    assert behind([mine], "me", ZONE, [edge("other", generations=same_date)]) == []
