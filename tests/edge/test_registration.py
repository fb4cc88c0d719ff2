"""An edge registers itself in a real tracker's registry, with the uplink it reports."""

from __future__ import annotations

from aptmesh.edge.app import reported_upload_capacity
from aptmesh.edge.config import EdgeConfig
from aptmesh.tracker.app import RunningTracker
from aptmesh.tracker.records import Edge as EdgeRecord
from tests.edge.conftest import EdgeFactory, wait_for
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
    await wait_for(
        lambda: tracker.store.live_edges("lab") == expected, what="both edges registered"
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
    await wait_for(lambda: len(tracker.store.live_edges("")) == 2, what="two edges registered")
    for edge in (a, b, loner):
        await edge.refresh_edges()
    assert a.swarm_side is not None and b.swarm_side is not None
    assert (a.swarm_side.site, b.swarm_side.site) == ((0, 2), (1, 2))
    assert loner.swarm_side is not None and loner.swarm_side.site is None
