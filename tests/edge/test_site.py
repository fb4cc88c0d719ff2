"""Small package files through the zone's owner edge (site.py): the rendezvous function, the
option, and real edges registered with a real tracker in front of the fixture repository."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aptmesh import config as aptconfig
from aptmesh.debrepo import DebRepo, RepoPackage
from aptmesh.testing import wait_until
from aptmesh_edge.app import RunningEdge, wants_site_fetch
from aptmesh_edge.config import EdgeConfig
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import (
    VIA_HEADER,
    EdgeInfo,
    SiteFetch,
    parse_via,
    rendezvous_order,
    rendezvous_owner,
    site_parent,
)
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import Edge as EdgeRecord
from tests.edge.conftest import HOST, EdgeFactory, Serve, fetch_indexes, get, metric, prefix_url
from tests.fixtures.tracker import TOKEN

ZONE = "site"
SERVED = "aptmesh_edge_served_bytes_total"
SITE_FETCHES = "aptmesh_edge_site_fetches_total"
MISSES = "aptmesh_edge_requests_total"


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def edges(*ids: str, zone: str = ZONE) -> list[EdgeInfo]:
    return [EdgeInfo(i, f"http://{i}.invalid:3142", zone) for i in ids]


def owners(ids: list[str], files: range) -> dict[int, str]:
    listed = edges(*ids)
    out = {}
    for n in files:
        owner = rendezvous_owner(sha(n), listed)
        assert owner is not None
        out[n] = owner.id
    return out


# -- the rendezvous function ---------------------------------------------------------------


def test_the_owner_is_stable_and_does_not_depend_on_the_list_order() -> None:
    listed = edges("a", "b", "c", "d")
    for n in range(200):
        owner = rendezvous_owner(sha(n), listed)
        assert owner == rendezvous_owner(sha(n), list(reversed(listed)))
        assert owner == rendezvous_owner(sha(n), listed[1:] + listed[:1])
    expected = max(listed, key=lambda e: hashlib.sha256(f"{sha(7)}:{e.id}".encode()).digest())
    assert rendezvous_owner(sha(7), listed) == expected
    assert rendezvous_owner(sha(7), []) is None


def test_files_spread_evenly_over_the_edges() -> None:
    ids = [f"edge-{i}" for i in range(8)]
    counts = {i: 0 for i in ids}
    for owner in owners(ids, range(8000)).values():
        counts[owner] += 1
    assert all(800 <= c <= 1200 for c in counts.values()), counts  # 1000 each, give or take


def test_an_edge_joining_or_leaving_moves_only_its_share() -> None:
    ids = [f"edge-{i}" for i in range(5)]
    files = range(6000)
    before = owners(ids, files)
    joined = owners([*ids, "edge-new"], files)
    moved = [n for n in files if joined[n] != before[n]]
    assert all(joined[n] == "edge-new" for n in moved)  # only to the newcomer
    assert 800 <= len(moved) <= 1200  # about 1/6
    left = owners([i for i in ids if i != "edge-2"], files)
    moved = [n for n in files if left[n] != before[n]]
    assert sorted(moved) == sorted(n for n in files if before[n] == "edge-2")


def test_site_parent_needs_this_edge_in_its_zone_and_never_answers_itself() -> None:
    listed = edges("a", "b") + edges("far", zone="elsewhere")
    for n in range(100):
        owner = rendezvous_owner(sha(n), edges("a", "b"))
        assert owner is not None
        other = "b" if owner.id == "a" else "a"
        assert site_parent(sha(n), owner.id, ZONE, listed) is None  # this edge owns it
        assert site_parent(sha(n), other, ZONE, listed) == owner
        assert site_parent(sha(n), other, ZONE, listed, via=(owner.id,)) is None  # a circle
        assert site_parent(sha(n), other, ZONE, listed, via=("far",)) == owner
        long_way = tuple(f"e{i}" for i in range(16))  # no tree is that deep: a loop
        assert site_parent(sha(n), other, ZONE, listed, via=long_way) is None
        assert site_parent(sha(n), "stranger", ZONE, listed) is None  # not in the list
        assert site_parent(sha(n), "far", "elsewhere", listed) is None  # alone in its zone
    assert site_parent(sha(1), "a", ZONE, []) is None


def test_a_file_comes_down_a_binary_tree_rooted_at_its_owner() -> None:
    """The k-th edge of a file's order fetches it from the (k - 1) // 2-th: every edge but the
    owner has a parent before it, none serves more than two, the deepest is two hops down."""
    ids = [f"edge-{i}" for i in range(6)]
    listed = edges(*ids)
    for n in range(50):
        order = rendezvous_order(sha(n), listed)
        assert order[0] == rendezvous_owner(sha(n), listed)
        assert rendezvous_order(sha(n), list(reversed(listed))) == order
        parents = {e.id: site_parent(sha(n), e.id, ZONE, listed) for e in order}
        assert parents[order[0].id] is None
        for k, edge in enumerate(order[1:], start=1):
            assert parents[edge.id] == order[(k - 1) // 2]
        children = [p.id for p in parents.values() if p is not None]
        assert max(children.count(i) for i in ids) == 2

        depths = {order[0].id: 0}
        for edge in order[1:]:  # a parent comes before its children
            parent = parents[edge.id]
            assert parent is not None
            depths[edge.id] = depths[parent.id] + 1
        assert max(depths.values()) == 2


def test_the_via_header_lists_the_edges_a_request_came_through() -> None:
    assert parse_via(None) == ()
    assert parse_via("a") == ("a",)
    assert parse_via(" a, b ,,c") == ("a", "b", "c")
    assert parse_via("") == ("?",)  # an edge that does not say which
    assert len(parse_via(",".join(f"e{i}" for i in range(100)))) == 100


def test_a_stale_list_routes_nothing() -> None:
    now = [100.0]
    site = SiteFetch(
        EdgeMetrics(), zone=ZONE, read_timeout=5.0, stale_after=30.0, clock=lambda: now[0]
    )
    files = [sha(n) for n in range(20)]
    assert all(site.parent_for(f) is None for f in files)  # never listed
    site.set_edges("a", edges("a", "b"))
    routed = [f for f in files if site.parent_for(f) is not None]
    assert routed and all(site.parent_for(f) == edges("b")[0] for f in routed)
    now[0] += 31.0
    assert all(site.parent_for(f) is None for f in files)
    site.set_edges("a", edges("a", "b"))
    assert [f for f in files if site.parent_for(f) is not None] == routed


# -- the option ----------------------------------------------------------------------------


def test_site_fetch_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    off = {"APTMESH_EDGE_VERIFY_MODE": "off"}
    assert aptconfig.load(EdgeConfig, "edge", [], off).site_fetch is True
    env = {**off, "APTMESH_EDGE_SITE_FETCH": "false"}
    assert aptconfig.load(EdgeConfig, "edge", [], env).site_fetch is False
    assert aptconfig.load(EdgeConfig, "edge", ["--site-fetch", "no"], off).site_fetch is False
    with pytest.raises(aptconfig.ConfigError, match="APTMESH_EDGE_SITE_FETCH"):
        aptconfig.load(EdgeConfig, "edge", [], {**off, "APTMESH_EDGE_SITE_FETCH": "maybe"})
    assert "APTMESH_EDGE_SITE_FETCH=true" in aptconfig.render(EdgeConfig(), "edge")

    # Roles by wiring: no registry to list the edges, or the option off: no site fetch.
    def wanted(**changes: Any) -> bool:
        return wants_site_fetch(EdgeConfig(verify_mode="off", cache_dir=tmp_path, **changes))

    assert wanted(tracker_grpc="127.0.0.1:9")
    assert not wanted()
    assert not wanted(tracker_grpc="127.0.0.1:9", site_fetch=False)


# -- real edges ----------------------------------------------------------------------------


def small_packages(repo: DebRepo) -> list[RepoPackage]:
    small = [p for p in repo.packages if not p.swarmed]
    assert len(small) >= 3
    return small


def owner_of(pkg: RepoPackage, ids: list[str]) -> str:
    owner = rendezvous_owner(pkg.sha256, edges(*ids))
    assert owner is not None
    return owner.id


async def site_edges(
    make_edge: EdgeFactory, tracker: RunningTracker, count: int, *, others: int = 0
) -> list[RunningEdge]:
    """`count` edges of one zone, registered, each knowing the others (and `others` more
    registered edges, such as fakes)."""
    made = [
        await make_edge(
            tracker_grpc=tracker.grpc_target,
            tracker_announce=(tracker.announce_url,),
            publish_token=TOKEN,
            zone=ZONE,
        )
        for _ in range(count)
    ]
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == count + others,
        what="edges registered",
    )
    for edge in made:
        await edge.refresh_edges()
    return made


async def check(client: aiohttp.ClientSession, url: str, pkg: RepoPackage, **kw: Any) -> None:
    status, body, _ = await get(client, url, **kw)
    assert status == 200, body
    assert hashlib.sha256(body).hexdigest() == pkg.sha256


async def test_a_pulse_at_two_edges_fetches_each_small_file_from_outside_once(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    pair = await site_edges(make_edge, tracker, 2)
    for edge in pair:
        await fetch_indexes(client, edge, debrepo)
    small = small_packages(debrepo)
    await asyncio.gather(
        *(check(client, prefix_url(e, p.filename), p) for p in small for e in pair)
    )
    for pkg in small:
        assert debrepo.server.requests(pkg.filename) == 1, pkg.filename
    ids = [e.edge_id() for e in pair]
    for edge in pair:
        foreign = [p for p in small if owner_of(p, ids) != edge.edge_id()]
        assert metric(edge, SERVED, source="edge") == sum(p.size for p in foreign)
        assert metric(edge, SITE_FETCHES, result="ok") == len(foreign)
        assert metric(edge, SITE_FETCHES, result="failed") == 0
        # Both keep what they served: the next client is a hit.
        for pkg in small:
            assert edge.blobs.get(pkg.sha256) is not None
    assert sum(metric(e, SERVED, source="edge") for e in pair) == sum(p.size for p in small)


async def test_a_dead_owner_costs_little_and_the_file_comes_from_upstream(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    pair = await site_edges(make_edge, tracker, 2)
    small = small_packages(debrepo)
    ids = [e.edge_id() for e in pair]
    dead = next(e for e in pair if e.edge_id() == owner_of(small[0], ids))
    survivor = next(e for e in pair if e is not dead)
    await fetch_indexes(client, survivor, debrepo)
    theirs = [p for p in small if owner_of(p, ids) == dead.edge_id()]
    assert dead.swarm_side is not None
    dead.swarm_side.swarm.apply(stop_tracker_timeout=0)
    await dead.stop()
    for pkg in theirs:
        started = time.monotonic()
        await check(client, prefix_url(survivor, pkg.filename), pkg)
        assert time.monotonic() - started < 2.0
        assert debrepo.server.requests(pkg.filename) == 1
    assert metric(survivor, SITE_FETCHES, result="failed") == len(theirs)
    assert metric(survivor, SITE_FETCHES, result="ok") == 0
    assert metric(survivor, SERVED, source="edge") == 0


async def register(tracker: RunningTracker, edge_id: str, url: str) -> None:
    async with TrackerClient(tracker.grpc_target, token=TOKEN) as registry:
        await registry.register_edge(EdgeRecord(edge_id, url, ZONE))


def owning_id(edge: RunningEdge, pkgs: list[RepoPackage]) -> str:
    """An edge id that owns every one of `pkgs` against `edge`. The search is long: an edge
    whose score for a file is in the top 1/1000 (its port is random) beats 1,000 tries."""
    return next(
        f"fake-{i}"
        for i in range(10**6)
        if all(owner_of(p, [edge.edge_id(), f"fake-{i}"]) == f"fake-{i}" for p in pkgs)
    )


async def test_a_lying_owner_is_not_believed_and_nothing_wrong_is_cached(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    fake_edge: Serve,
) -> None:
    asked: list[str] = []

    async def lie(request: web.Request) -> web.Response:
        asked.append(request.headers.get(VIA_HEADER, ""))
        path = request.match_info["path"].removeprefix(f"{HOST}/debian/")
        body = bytes(b ^ 0xFF for b in debrepo.read(path))  # the right length, wrong bytes
        return web.Response(body=body)

    small = small_packages(debrepo)
    url = await fake_edge(lie)
    # The real edge registers first; then a liar that owns every small file.
    (edge,) = await site_edges(make_edge, tracker, 1)
    await register(tracker, owning_id(edge, small), url)
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == 2, what="liar registered"
    )
    await edge.refresh_edges()
    await fetch_indexes(client, edge, debrepo)
    for pkg in small:
        await check(client, prefix_url(edge, pkg.filename), pkg)
        await check(client, prefix_url(edge, pkg.filename), pkg)  # now from the cache
        assert debrepo.server.requests(pkg.filename) == 1
    assert asked == [edge.edge_id()] * len(small)
    assert metric(edge, SITE_FETCHES, result="failed") == len(small)
    assert metric(edge, SITE_FETCHES, result="ok") == 0
    kind = {"service": "edge", "kind": "site_sha256"}
    assert metric(edge, "aptmesh_verification_failures_total", **kind) == len(small)
    assert metric(edge, SERVED, source="edge") == 0
    assert metric(edge, "aptmesh_edge_cache_entries") == len(small)
    for pkg in small:
        blob = edge.blobs.get(pkg.sha256)
        assert blob is not None
        assert hashlib.sha256(blob.path.read_bytes()).hexdigest() == pkg.sha256


async def test_a_request_from_another_edge_climbs_to_the_owner_unless_the_owner_sent_it(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    pair = await site_edges(make_edge, tracker, 2)
    ids = [e.edge_id() for e in pair]
    first, other = small_packages(debrepo)[:2]
    for edge in pair:
        await fetch_indexes(client, edge, debrepo)

    def roles(pkg: RepoPackage) -> tuple[RunningEdge, RunningEdge]:
        owner = next(e for e in pair if e.edge_id() == owner_of(pkg, ids))
        return owner, next(e for e in pair if e is not owner)

    misses = {"file_class": "package", "cache": "miss"}
    # From an edge below: asked on to the parent (the owner), which fetches it once.
    owner, asked = roles(first)
    await check(client, prefix_url(asked, first.filename), first, headers={VIA_HEADER: "below"})
    assert debrepo.server.requests(first.filename) == 1
    assert metric(asked, SITE_FETCHES, result="ok") == 1
    assert metric(owner, MISSES, **misses) == 1
    # Through the parent already: never asked back.
    owner, asked = roles(other)
    fetched, missed = metric(asked, SITE_FETCHES, result="ok"), metric(owner, MISSES, **misses)
    via = {VIA_HEADER: f"below,{owner.edge_id()}"}
    await check(client, prefix_url(asked, other.filename), other, headers=via)
    assert debrepo.server.requests(other.filename) == 1
    assert metric(asked, SITE_FETCHES, result="ok") == fetched
    assert metric(owner, MISSES, **misses) == missed


async def test_a_small_file_comes_down_the_tree_and_leaves_the_upstream_once(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    """Four edges: the last in a file's order asks its parent (the second), which asks the
    owner, which fetches it from the upstream; each passes the bytes on and keeps the file."""
    four = await site_edges(make_edge, tracker, 4)
    pkg = small_packages(debrepo)[0]
    order = rendezvous_order(pkg.sha256, edges(*(e.edge_id() for e in four)))
    by_id = {e.edge_id(): e for e in four}
    owner, second, _, last = (by_id[e.id] for e in order)
    for edge in four:
        await fetch_indexes(client, edge, debrepo)
    await check(client, prefix_url(last, pkg.filename), pkg)
    assert debrepo.server.requests(pkg.filename) == 1
    for edge in (last, second):
        assert metric(edge, SITE_FETCHES, result="ok") == 1
        assert metric(edge, SERVED, source="edge") == pkg.size
    assert metric(owner, SITE_FETCHES, result="ok") == 0
    for edge in (owner, second, last):
        assert edge.blobs.get(pkg.sha256) is not None
    # The others now hit their parents' caches; the upstream is not asked again.
    for edge in four:
        await check(client, prefix_url(edge, pkg.filename), pkg)
    assert debrepo.server.requests(pkg.filename) == 1


async def test_a_request_from_another_edge_takes_over_a_download_waiting_for_the_owner(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    fake_edge: Serve,
) -> None:
    """Edges whose lists disagree: this edge waits for an owner that waits for it. A request
    through that owner must not join that wait; it makes the download use the upstream."""
    asked = asyncio.Event()
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        asked.set()
        await release.wait()
        return web.Response(status=503)

    pkg = small_packages(debrepo)[0]
    url = await fake_edge(hang)
    (edge,) = await site_edges(make_edge, tracker, 1)
    await register(tracker, owning_id(edge, [pkg]), url)
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == 2, what="fake registered"
    )
    await edge.refresh_edges()
    await fetch_indexes(client, edge, debrepo)
    try:
        waiting = asyncio.create_task(check(client, prefix_url(edge, pkg.filename), pkg))
        await asyncio.wait_for(asked.wait(), 5.0)
        started = time.monotonic()
        via = {VIA_HEADER: owning_id(edge, [pkg])}  # the owner asks back: a circle
        await check(client, prefix_url(edge, pkg.filename), pkg, headers=via)
        await asyncio.wait_for(waiting, 2.0)
        assert time.monotonic() - started < 2.0  # well before the owner's read timeout (5 s)
    finally:
        release.set()
    assert debrepo.server.requests(pkg.filename) == 1
    assert metric(edge, SITE_FETCHES, result="failed") == 1
    assert metric(edge, SERVED, source="upstream") >= 2 * pkg.size


async def test_an_edge_passes_a_file_on_to_the_edges_below_as_it_arrives(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
    fake_edge: Serve,
) -> None:
    """The parent sends half the file and pauses: an edge below already has that half, while
    this edge's own clients get nothing until the whole file is in and checked."""
    pkg = max(small_packages(debrepo), key=lambda p: p.size)
    half = pkg.size // 2
    resume = asyncio.Event()

    async def halves(request: web.Request) -> web.StreamResponse:
        data = debrepo.read(pkg.filename)
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[:half])
        await resume.wait()
        await response.write(data[half:])
        return response

    url = await fake_edge(halves)
    (edge,) = await site_edges(make_edge, tracker, 1)
    await register(tracker, owning_id(edge, [pkg]), url)
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges(ZONE)) == 2, what="parent registered"
    )
    await edge.refresh_edges()
    await fetch_indexes(client, edge, debrepo)
    target = prefix_url(edge, pkg.filename)
    try:
        async with client.get(target, headers={VIA_HEADER: "below"}) as below:
            assert below.status == 200
            # All but the last byte written: that one waits for this edge's check.
            first = await asyncio.wait_for(below.content.readexactly(half - 1), 5.0)
            a_client = asyncio.create_task(get(client, target))
            await asyncio.sleep(0.3)
            assert not a_client.done()  # a client waits for the checked file
            resume.set()
            rest = await below.content.read()
        status, body, _ = await a_client
    finally:
        resume.set()
    assert first + rest == debrepo.read(pkg.filename)
    assert status == 200 and body == debrepo.read(pkg.filename)
    assert debrepo.server.requests(pkg.filename) == 0  # all of it came from the parent
