"""Hostile HTTP load against a real tracker process: a peer flood from one address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from aptmesh_tracker.client import TrackerClient
from bench.hostile_load import Leecher, flood, indexed_record, seed_box_announces
from tests.tracker.conftest import TOKEN
from tests.tracker.process import tracker_process

MIB = 1 << 20


@pytest.mark.parametrize(
    "args",
    [
        (),  # the defaults: the flood's address keeps 8 peers in the swarm
        # No per-address bound: thousands of fake peers stored, and still the registered
        # seed box is in every answer (registered peers are offered first).
        ("--max-peers-per-address-swarm=100000", "--max-peers-per-address=100000"),
    ],
    ids=["default-bounds", "flood-stored"],
)
async def test_a_peer_flood_neither_buries_the_seed_box_nor_grows_the_tracker(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    record = indexed_record(tmp_path)
    ih = bytes.fromhex(record.info_hash_v1)
    async with tracker_process(
        tmp_path / "t.sqlite3", *args, env={"APTMESH_TRACKER_PUBLISH_TOKEN": TOKEN}
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
    assert peak - before < 20 * MIB, (before, peak, after)
    stored = [line for line in metrics.splitlines() if line.startswith("aptmesh_tracker_peers{")]
    refused = [
        line for line in metrics.splitlines() if line.startswith("aptmesh_tracker_refused_peers")
    ]
    if args:
        assert sum(float(line.split()[-1]) for line in stored) > 1000, stored
        assert len(answers[-1]) == 20  # a full answer from a big swarm, seed box among them
    else:
        assert all(len([p for p in got if p[0] == "127.0.0.9"]) <= 8 for got in answers)
        assert any('"address_swarm"' in line and not line.endswith(" 0.0") for line in refused)


async def exchange(url: str, data: bytes, deadline: float = 10.0) -> bytes:
    """Sends raw bytes to the server of `url` and reads until it closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=deadline)
    finally:
        writer.close()


async def test_parser_rejections_are_failure_reasons_and_rate_limited_warnings(
    tmp_path: Path,
) -> None:
    async with tracker_process(tmp_path / "t.sqlite3", "--open-tracker=true") as tracker:
        hashes = "&".join("info_hash=" + "%41" * 20 for _ in range(1000))
        async with aiohttp.ClientSession() as session:
            async with session.get(tracker.http_url + "/scrape?" + hashes) as response:
                assert response.status == 200
                body = await response.read()
            assert body.startswith(b"d14:failure reason")
            for _ in range(40):  # bounded: 40 junk announces and 40 junk request lines
                async with session.get(tracker.http_url + "/announce?info_hash=x") as response:
                    assert (await response.read()).startswith(b"d14:failure reason")
                raw = await exchange(tracker.http_url, b"GET /\x00 HTTP/1.1\r\n\r\n")
                assert b"failure reason" in raw
            await asyncio.sleep(0)  # let the last lines reach the log
            deadline = asyncio.get_running_loop().time() + 10
            while len(tracker.log) < 5 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
    refusals = [e for e in tracker.log if str(e["event"]).endswith("_request_refused")]
    assert refusals, tracker.log
    assert all(e["level"] == "warning" and "exception" not in e for e in refusals)
    assert len(refusals) <= 2 * 10 + 2  # two kinds, a burst of 10 each (plus one per window)
    assert not [e for e in tracker.log if e["level"] == "error"], tracker.log


async def test_a_request_pipelined_after_close_does_not_spoil_the_first_answer(
    tmp_path: Path,
) -> None:
    async with tracker_process(tmp_path / "t.sqlite3") as tracker:
        raw = await exchange(
            tracker.http_url,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\x00junk\r\n\r\n",
        )
    assert raw.startswith(b"HTTP/1.1 200"), raw
    assert raw.count(b"HTTP/1.1") == 1


async def test_idle_and_half_sent_connections_are_closed(tmp_path: Path) -> None:
    async with tracker_process(tmp_path / "t.sqlite3", "--http-head-timeout=0.5") as tracker:
        started = asyncio.get_running_loop().time()
        assert await exchange(tracker.http_url, b"", deadline=10) == b""
        assert await exchange(tracker.http_url, b"GET /annou", deadline=10) == b""
        # A keep-alive connection answered once is closed when it stays idle.
        raw = await exchange(tracker.http_url, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"ok\n")
        assert asyncio.get_running_loop().time() - started < 9
