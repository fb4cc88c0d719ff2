"""Real BitTorrent clients through this tracker only: libtorrent to libtorrent, libtorrent to aria2.

DHT, LSD, UPnP, NAT-PMP, PEX and uTP are off and no peer is connected by
hand, so the only way the clients can find each other is the tracker's
announce response. Everything listens on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import libtorrent as lt
import pytest

from aptmesh import bencode
from aptmesh.testing import free_port, wait_until
from aptmesh.torrent import make_torrent
from aptmesh_tracker import app, wire
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.tracker.conftest import get_bytes, make_config, make_file, record_of

SIZE = 1_500_000


def new_session() -> Any:
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "dht_bootstrap_nodes": "",
        "allow_multiple_connections_per_ip": True,
        "user_agent": "aptmesh-test",
    }
    return lt.session(settings)  # type: ignore[call-overload]  # the binding takes a dict


def add(session: Any, metainfo: bytes, save_path: Path) -> Any:
    params = lt.load_torrent_buffer(metainfo)
    params.save_path = str(save_path)
    params.flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    params.flags |= lt.torrent_flags.disable_pex
    return session.add_torrent(params)


@pytest.fixture
def sessions() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for session in made:
        session.pause()
    made.clear()


async def scrape_v1(
    http: aiohttp.ClientSession, tracker: RunningTracker, v1: bytes
) -> wire.ScrapeStats:
    url = tracker.http_url + "/scrape?" + wire.encode_scrape_request(wire.ScrapeRequest((v1,)))
    files = dict(wire.decode_scrape_response(await get_bytes(http, url)).files)
    return files.get(v1, wire.ScrapeStats(0, 0, 0))


async def start_seed(
    tracker: RunningTracker,
    http: aiohttp.ClientSession,
    sessions: list[Any],
    metainfo: bytes,
    directory: Path,
    v1: bytes,
) -> None:
    seeder = new_session()
    sessions.append(seeder)
    seed = add(seeder, metainfo, directory)
    await wait_until(lambda: seed.status().is_seeding, what="the seed to check its file")
    # Start the downloader only once the tracker knows the seed, so its first
    # announce already gets a peer (the next one would be min_interval later).

    async def seed_announced() -> bool:
        return (await scrape_v1(http, tracker, v1)).complete >= 1

    await wait_until(seed_announced, what="the seed's announce")


async def seed_and_publish(
    tracker: RunningTracker,
    client: TrackerClient,
    http: aiohttp.ClientSession,
    sessions: list[Any],
    tmp_path: Path,
) -> tuple[bytes, bytes, Path]:
    """Publishes a file to the index and seeds it; returns (torrent, v1 hash, file)."""
    path = make_file(tmp_path / "seed", "big_1.0+dfsg-1~bpo12+1_amd64.deb", SIZE, seed=7)
    hashed = make_torrent(path)
    await client.publish(record_of(hashed))
    metainfo = hashed.torrent.with_trackers([tracker.announce_url], [])
    v1 = bytes.fromhex(hashed.torrent.info_hash_v1)
    await start_seed(tracker, http, sessions, metainfo, path.parent, v1)
    return metainfo, v1, path


async def test_libtorrent_seed_to_libtorrent_leech(
    tracker: RunningTracker,
    client: TrackerClient,
    http: aiohttp.ClientSession,
    sessions: list[Any],
    tmp_path: Path,
) -> None:
    metainfo, v1, path = await seed_and_publish(tracker, client, http, sessions, tmp_path)
    leecher = new_session()
    sessions.append(leecher)
    leech = add(leecher, metainfo, tmp_path / "leech")
    await wait_until(lambda: leech.status().is_seeding, what="the leech to finish")
    assert (tmp_path / "leech" / path.name).read_bytes() == path.read_bytes()

    async def counted() -> bool:
        stats = await scrape_v1(http, tracker, v1)
        return (stats.complete, stats.incomplete, stats.downloaded) == (2, 0, 1)

    await wait_until(counted, what="scrape to show 2 seeds, 0 leeches, 1 download")


def v1_only(metainfo: bytes, announce: str) -> tuple[bytes, bytes]:
    """The v1 half of a hybrid torrent (same pieces), and its infohash."""
    meta = bencode.decode(metainfo)
    assert isinstance(meta, dict) and isinstance(meta[b"info"], dict)
    info = {k: v for k, v in meta[b"info"].items() if k not in (b"meta version", b"file tree")}
    encoded = bencode.encode({b"announce": announce.encode(), b"info": info})
    return encoded, hashlib.sha1(bencode.encode(info)).digest()  # noqa: S324 - BEP 3


async def test_aria2_downloads_from_a_libtorrent_seed(
    http: aiohttp.ClientSession, sessions: list[Any], tmp_path: Path
) -> None:
    """aria2 1.36 drops the empty-named key of a v2 `file tree` when it hashes `info`, so it
    computes a wrong v1 infohash for every hybrid torrent (verified here: it announces
    SHA-1 of info with `file tree` = {name: {}}). It can only join through a v1-only
    torrent of the same file, which an open tracker serves."""
    tracker = await app.start(make_config(tmp_path / "open", open_tracker=True), maintain_every=0)
    try:
        path = make_file(tmp_path / "seed", "big_1.0+dfsg-1~bpo12+1_amd64.deb", SIZE, seed=7)
        metainfo, v1 = v1_only(make_torrent(path).torrent.metainfo, tracker.announce_url)
        await start_seed(tracker, http, sessions, metainfo, path.parent, v1)
        await run_aria2(tracker, http, metainfo, path, tmp_path)
    finally:
        await tracker.stop(grace=0)


async def run_aria2(
    tracker: RunningTracker,
    http: aiohttp.ClientSession,
    metainfo: bytes,
    path: Path,
    tmp_path: Path,
) -> None:
    torrent_file = tmp_path / "pkg.torrent"
    torrent_file.write_bytes(metainfo)
    out = tmp_path / "aria2"
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "aria2c",
        "--no-conf",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--seed-time=0",
        f"--listen-port={port}",
        "--interface=127.0.0.1",
        "--bt-stop-timeout=20",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--file-allocation=none",
        f"--dir={out}",
        str(torrent_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")
    assert (out / path.name).read_bytes() == path.read_bytes()  # noqa: ASYNC240 - test file
    metrics = (await get_bytes(http, tracker.http_url + "/metrics")).decode()
    # the seed and aria2 both announced: the tracker is how aria2 found the seed
    assert 'aptmesh_tracker_announces_total{event="started"} 2.0' in metrics
