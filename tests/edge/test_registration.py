"""An edge registers itself in a real tracker's registry, with the uplink it reports."""

from __future__ import annotations

from aptmesh.testing import wait_until
from aptmesh_edge.app import reported_upload_capacity
from aptmesh_edge.config import EdgeConfig
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.records import Edge as EdgeRecord
from tests.edge.conftest import EdgeFactory
from tests.fixtures.tracker import TOKEN


def test_reported_capacity_is_the_link_the_edge_can_fill() -> None:
    assert reported_upload_capacity(EdgeConfig()) == 0
    assert reported_upload_capacity(EdgeConfig(upload_capacity=10_000_000)) == 10_000_000
    assert reported_upload_capacity(EdgeConfig(upload_rate_limit=4_000_000)) == 4_000_000
    capped = EdgeConfig(upload_capacity=10_000_000, upload_rate_limit=4_000_000)
    assert reported_upload_capacity(capped) == 4_000_000
    fast_cap = EdgeConfig(upload_capacity=10_000_000, upload_rate_limit=40_000_000)
    assert reported_upload_capacity(fast_cap) == 10_000_000


async def test_edges_register_their_upload_capacity(
    make_edge: EdgeFactory, tracker: RunningTracker
) -> None:
    swarm = {
        "tracker_grpc": tracker.grpc_target,
        "tracker_announce": tracker.announce_url,
        "publish_token": TOKEN,
        "zone": "lab",
    }
    measured = await make_edge(edge_id="measured", upload_capacity=10_000_000, **swarm)
    limited = await make_edge(edge_id="limited", upload_rate_limit=4 * 1024**2, **swarm)
    expected = [
        EdgeRecord("limited", limited.public_url(), "lab", upload_capacity=4 * 1024**2),
        EdgeRecord("measured", measured.public_url(), "lab", upload_capacity=10_000_000),
    ]
    await wait_until(
        lambda: tracker.stores.registry.live_edges("lab") == expected, what="both edges registered"
    )


async def test_registered_edges_rank_themselves_in_the_site_and_others_do_not(
    make_edge: EdgeFactory, tracker: RunningTracker
) -> None:
    """Each registered edge takes its place among the registry's live edges (by id), which
    decides the pieces of every torrent it asks the seeder for first; an edge that is not in
    the registry (no publish token) shares no work."""
    swarm = {"tracker_grpc": tracker.grpc_target, "tracker_announce": tracker.announce_url}
    b = await make_edge(edge_id="b", publish_token=TOKEN, **swarm)
    a = await make_edge(edge_id="a", publish_token=TOKEN, **swarm)
    loner = await make_edge(edge_id="loner", **swarm)
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges("")) == 2, what="two edges registered"
    )
    for edge in (a, b, loner):
        await edge.refresh_edges()
    assert a.swarm_side is not None and b.swarm_side is not None
    assert (a.swarm_side.site, b.swarm_side.site) == ((0, 2), (1, 2))
    assert loner.swarm_side is not None and loner.swarm_side.site is None


async def test_edges_learn_whether_the_seed_boxes_are_the_sites_bottleneck(
    make_edge: EdgeFactory, tracker: RunningTracker
) -> None:
    """From the registry: the edges' uplinks and the seed boxes' summed uplink. Two edges of
    10 MB/s could pass on all a 10 MB/s seed box sends (seed-bound: they ask it for their home
    pieces only); a seed box of 40 MB/s has room to spare; without one they cannot tell."""
    swarm = {
        "tracker_grpc": tracker.grpc_target,
        "tracker_announce": tracker.announce_url,
        "publish_token": TOKEN,
        "upload_capacity": 10_000_000,
    }
    edges = [await make_edge(edge_id=name, **swarm) for name in ("a", "b")]
    await wait_until(
        lambda: len(tracker.stores.registry.live_edges("")) == 2, what="two edges registered"
    )

    async def seed_bound() -> list[bool]:
        for edge in edges:
            await edge.refresh_edges()
        return [edge.swarm_side.seed_bound for edge in edges if edge.swarm_side is not None]

    assert await seed_bound() == [False, False]  # no seed box: unknown
    tracker.stores.registry.register(
        EdgeRecord("box", "", upload_capacity=10_000_000, seed_box=True), 60
    )
    assert await seed_bound() == [True, True]
    tracker.stores.registry.register(
        EdgeRecord("box", "", upload_capacity=40_000_000, seed_box=True), 60
    )
    assert await seed_bound() == [False, False]
