"""Hostile HTTP load against a real tracker process: a peer flood from one address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from aptmesh_tracker.client import TrackerClient
from bench.hostile_load import Leecher, flood, indexed_record, seed_box_announces
from tests.tracker.conftest import TOKEN
from tests.tracker.process import tracker_process

MIB = 1 << 20


async def test_a_peer_flood_neither_buries_the_seed_box_nor_grows_the_tracker(
    tmp_path: Path,
) -> None:
    record = indexed_record(tmp_path)
    ih = bytes.fromhex(record.info_hash_v1)
    async with tracker_process(
        tmp_path / "t.sqlite3", env={"APTMESH_TRACKER_PUBLISH_TOKEN": TOKEN}
    ) as tracker:
        async with TrackerClient(tracker.grpc_target, token=TOKEN) as client:
            await client.publish(record)
        announce = tracker.http_url + "/announce"
        port = await seed_box_announces(tracker.grpc_target, TOKEN, announce, ih)
        before, _ = tracker.memory()
        leecher = Leecher(announce, ih)
        flooding = asyncio.create_task(flood(announce, ih, 6000, deadline=60))
        answers: list[list[tuple[str, int]]] = []
        while not flooding.done() or not answers:  # bounded: the flood's count and deadline
            answers.append(await leecher.peers(len(answers)))
        assert await flooding > 1000
        after, peak = tracker.memory()
        async with aiohttp.ClientSession() as session:
            metrics = await (await session.get(tracker.http_url + "/metrics")).text()
    assert all(("127.0.0.1", port) in got for got in answers), answers
    assert all(len([p for p in got if p[0] == "127.0.0.9"]) <= 8 for got in answers)
    assert peak - before < 20 * MIB, (before, peak, after)
    refused = [
        line for line in metrics.splitlines() if line.startswith("aptmesh_tracker_refused_peers")
    ]
    assert any('limit="address_swarm"' in line and not line.endswith(" 0.0") for line in refused)
