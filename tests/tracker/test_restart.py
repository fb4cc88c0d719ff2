"""A tracker restart as its clients see it: a new peers_epoch, and a client that is back soon.

Peers live in memory, so a restarted tracker knows none; the registry's
`peers_epoch` tells seeders and edges so (they then announce every torrent
again: tests/seeder/test_tracker_restart.py). And a client that failed
through an outage must reach the tracker again within a few seconds of its
return: gRPC's default reconnect backoff grows to minutes, which kept edges
and seed boxes out of the registry for 30-40 s after an outage longer than a
lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aptmesh.testing import free_port
from aptmesh_tracker import app
from aptmesh_tracker.client import IndexUnavailable, TrackerClient
from aptmesh_tracker.records import Edge
from tests.tracker.conftest import TOKEN, make_config

EDGE = Edge("edge-a", "http://127.0.0.1:3142", "lab")


async def test_a_restarted_tracker_has_a_new_peers_epoch(tmp_path: Path) -> None:
    config = make_config(tmp_path, grpc_bind=f"127.0.0.1:{free_port()}")
    epochs = []
    for _ in range(2):
        running = await app.start(config, maintain_every=0)
        try:
            async with TrackerClient(running.grpc_target, token=TOKEN) as client:
                await client.register_edge(EDGE)
                epoch = (await client.list_site()).peers_epoch
                assert epoch == running.peers.epoch != ""
                epochs.append(epoch)
        finally:
            await running.stop(grace=0)
    assert epochs[0] != epochs[1]


OUTAGE = 12.0  # seconds of failed calls: gRPC's default backoff has grown past 10 s by then
BACK_WITHIN = 3.0  # seconds after the tracker's return that a call must work again


async def test_a_client_is_back_within_seconds_of_an_outage(tmp_path: Path) -> None:
    config = make_config(tmp_path, grpc_bind=f"127.0.0.1:{free_port()}")
    running = await app.start(config, maintain_every=0)
    async with TrackerClient(running.grpc_target, token=TOKEN, timeout=1.0) as client:
        await client.register_edge(EDGE)
        await running.stop(grace=0)
        began = time.monotonic()
        while time.monotonic() - began < OUTAGE:  # a renewal loop retrying through the outage
            with contextlib.suppress(IndexUnavailable):
                await client.register_edge(EDGE)
            await asyncio.sleep(0.5)
        running = await app.start(config, maintain_every=0)
        try:
            back = time.monotonic()
            while True:
                try:
                    await client.register_edge(EDGE)
                    break
                except IndexUnavailable:
                    assert time.monotonic() - back < BACK_WITHIN, "still unreachable"
                    await asyncio.sleep(0.1)
        finally:
            await running.stop(grace=0)
