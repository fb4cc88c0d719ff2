"""A seeder that knows its uplink registers in the tracker's edge registry as a seed box."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aptmesh.debrepo import DebRepo
from aptmesh_seeder import app
from aptmesh_seeder.publish import MemoryPublisher
from aptmesh_tracker import app as tracker_app
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import Edge, Site
from tests.fixtures.tracker import TOKEN

from .conftest import StartSeeder, seeder_config


async def _site_when(client: TrackerClient, capacity: int) -> Site:
    async with asyncio.timeout(10):
        while (site := await client.list_site()).seed_upload_capacity != capacity:
            await asyncio.sleep(0.05)
    return site


async def test_a_seeder_that_knows_its_uplink_registers_as_a_seed_box(
    tmp_path: Path,
    debrepo: DebRepo,
    tracker: tracker_app.RunningTracker,
    start_seeder: StartSeeder,
) -> None:
    edge = Edge("e0", "http://127.0.0.1:9000", upload_capacity=3_000_000)
    async with TrackerClient(tracker.grpc_target, token=TOKEN) as client:
        await client.register_edge(edge)
        first = await start_seeder(
            seeder_config(
                tmp_path / "a", debrepo, tracker, upload_capacity=10_000_000, seed_box_id="seed-a"
            )
        )
        assert first.registration is not None
        assert await _site_when(client, 10_000_000) == Site([edge], 10_000_000)
        assert tracker.stores.registry.edge_count() == 1
        # The seeder's view of the site still lists the edges only.
        assert await first.seeder.publisher.edge_uplinks() == [3_000_000]

        # A seeder that knows only its upload cap reports that; the seed boxes add up.
        await start_seeder(
            seeder_config(
                tmp_path / "b", debrepo, tracker, upload_rate_limit=4_000_000, seed_box_id="seed-b"
            )
        )
        assert await _site_when(client, 14_000_000) == Site([edge], 14_000_000)


async def test_a_seeder_without_uplink_or_token_does_not_register(
    tmp_path: Path,
    debrepo: DebRepo,
    tracker: tracker_app.RunningTracker,
    start_seeder: StartSeeder,
) -> None:
    unknown = await start_seeder(seeder_config(tmp_path / "a", debrepo, tracker))
    no_token = await start_seeder(
        seeder_config(tmp_path / "b", debrepo, tracker, upload_capacity=10**7, publish_token="")
    )
    assert unknown.registration is None and no_token.registration is None
    assert tracker.stores.registry.seed_upload_capacity() == 0
    assert tracker.stores.registry.live_edges("") == []


def test_only_a_seeder_with_a_swarm_registers(
    tmp_path: Path, debrepo: DebRepo, tracker: tracker_app.RunningTracker
) -> None:
    config = seeder_config(tmp_path, debrepo, tracker, upload_capacity=10**7)
    assert app.seed_box_of(config, None) is None  # --once seeds nothing


async def test_registration_failures_are_retried_and_the_lease_renewed() -> None:
    publisher = MemoryPublisher(lease_seconds=3)  # renewed after 1 s
    publisher.fail = True
    box = Edge("seed-a", "", upload_capacity=10**7, seed_box=True)
    registering = asyncio.create_task(app.register_seed_box(publisher, box, retry=0.05))
    try:
        async with asyncio.timeout(10):
            while publisher.register_calls < 3:  # tried again after `retry`, not given up
                await asyncio.sleep(0.02)
            assert not registering.done() and publisher.seed_boxes == {}
            publisher.fail = False
            while not publisher.seed_boxes:
                await asyncio.sleep(0.02)
            registered = publisher.register_calls
            while publisher.register_calls == registered:  # renewed at a third of the lease
                await asyncio.sleep(0.02)
        assert publisher.seed_boxes == {"seed-a": box}
    finally:
        registering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registering
