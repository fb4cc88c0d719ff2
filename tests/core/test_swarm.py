"""The libtorrent wrapper with real sessions on loopback: seed, stream in order, web seed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import libtorrent as lt
import pytest
from aiohttp import web

from aptmesh import web as webhelp
from aptmesh.swarm import (
    QUEUE_DEEPEN_AFTER,
    QUEUE_MAX,
    QUEUE_MIN,
    QUEUE_SHALLOW_AFTER,
    QueueControl,
    Swarm,
    SwarmError,
    SwarmSettings,
    request_queue_depth,
    session_settings,
    upload_capacity,
)
from aptmesh.torrent import make_torrent

LOOPBACK = SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="edge")


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / "seed" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_datacentre_settings_turn_discovery_and_utp_off() -> None:
    pack = session_settings(SwarmSettings())
    assert pack["enable_dht"] is False and pack["enable_lsd"] is False
    assert pack["enable_upnp"] is False and pack["enable_natpmp"] is False
    assert pack["enable_incoming_utp"] is False and pack["dht_bootstrap_nodes"] == ""
    assert session_settings(SwarmSettings(public=True))["enable_dht"] is True


def test_no_role_suggests_read_cache_pieces() -> None:
    """hps suggests the seed's cached pieces to every peer, so all ask it for the same ones."""
    none = int(lt.suggest_mode_t.no_piece_suggestions)
    for role in ("seeder", "edge"):
        assert session_settings(SwarmSettings(role=role))["suggest_mode"] == none


def test_a_seeder_that_knows_its_uplink_starts_shallow() -> None:
    """Known capacity (or a rate limit): peers may queue QUEUE_MIN blocks at first; unknown,
    or not a seeder: libtorrent's deep default, no control."""
    known = SwarmSettings(role="seeder", upload_capacity=10_000_000)
    assert upload_capacity(known) == 10_000_000
    assert session_settings(known)["max_allowed_in_request_queue"] == QUEUE_MIN
    limited = SwarmSettings(role="seeder", upload_rate_limit=5_000_000, upload_capacity=10_000_000)
    assert upload_capacity(limited) == 5_000_000
    for unknown in (SwarmSettings(role="seeder"), SwarmSettings(role="edge", upload_capacity=1)):
        assert upload_capacity(unknown) == 0
        assert session_settings(unknown)["max_allowed_in_request_queue"] == QUEUE_MAX


def _run(rates: list[float], capacity: float = 100.0) -> list[int]:
    state, depths = QueueControl(), []
    for rate in rates:
        state = request_queue_depth(state, rate, capacity)
        depths.append(state.depth)
    return depths


def test_a_full_link_keeps_the_request_queue_shallow() -> None:
    """Seed-bound: the uplink is full from the start, so the depth never leaves QUEUE_MIN."""
    assert _run([95.0, 99.0, 90.0, 97.0] * 5) == [QUEUE_MIN] * 20


def test_room_to_spare_for_a_while_deepens_it_and_a_full_link_makes_it_shallow_again() -> None:
    room = [50.0] * QUEUE_DEEPEN_AFTER
    assert _run(room)[-1] == QUEUE_MAX
    assert _run(room[:-1]) == [QUEUE_MIN] * (QUEUE_DEEPEN_AFTER - 1)
    # One full look in between starts the count again; so does one slow look.
    assert _run(room[:-1] + [95.0] + room[:-1])[-1] == QUEUE_MIN
    deep_then_full = _run(room + [95.0] * QUEUE_SHALLOW_AFTER)
    assert deep_then_full[-QUEUE_SHALLOW_AFTER:] == [QUEUE_MAX] * (QUEUE_SHALLOW_AFTER - 1) + [
        QUEUE_MIN
    ]


def test_an_idle_seeder_starts_the_next_burst_shallow() -> None:
    assert _run([50.0] * QUEUE_DEEPEN_AFTER + [0.0])[-1] == QUEUE_MIN
    assert request_queue_depth(QueueControl(), 50.0, 0) == QueueControl(QUEUE_MAX)


async def test_a_seeder_with_a_known_uplink_applies_the_depth(tmp_path: Path) -> None:
    """The session starts with QUEUE_MIN, and the control task runs until `close`."""
    swarm = Swarm(
        SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder", upload_capacity=10**7)
    )
    try:
        assert swarm.queue.depth == QUEUE_MIN
        assert swarm._session.get_settings()["max_allowed_in_request_queue"] == QUEUE_MIN
        assert swarm._queue_task is not None and not swarm._queue_task.done()
    finally:
        swarm.close()
    await asyncio.sleep(0)
    assert swarm._queue_task.cancelled() or swarm._queue_task.done()


async def test_leech_streams_verified_pieces_in_order_from_a_seed(tmp_path: Path) -> None:
    source = _file(tmp_path, "big_1.0+b1~x_amd64.deb", 3 * 1024 * 1024 + 123)
    hashed = make_torrent(source)
    seed, leech = Swarm(LOOPBACK), Swarm(LOOPBACK)
    try:
        # The seed holds the file under its content address, not its name.
        stored = tmp_path / "cas" / hashed.sha256
        stored.parent.mkdir()
        source.rename(stored)
        seeding = seed.add(hashed.torrent.metainfo, stored.parent, file_name=stored.name, seed=True)
        assert seeding.finished.is_set()
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        leech.connect_peer(fetching, "127.0.0.1", seed.listen_port)
        digest = hashlib.sha256()
        sizes = []
        async with asyncio.timeout(30):
            async for piece in fetching.pieces(stall_timeout=20):
                sizes.append(len(piece))
                digest.update(piece)
        assert digest.hexdigest() == hashed.sha256
        assert sum(sizes) == hashed.torrent.size
        assert len(sizes) == fetching.num_pieces
        async with asyncio.timeout(10):
            await fetching.finished.wait()
        assert seed.stats().payload_uploaded_bytes >= hashed.torrent.size
    finally:
        seed.close()
        leech.close()


async def test_web_seed_alone_delivers_the_file(tmp_path: Path) -> None:
    """A web seed added to a running torrent delivers it; its bytes are counted as the web
    seed's, not as peers'."""
    source = _file(tmp_path, "web_1_all.deb", 1_500_000)
    hashed = make_torrent(source)
    app = web.Application()
    app.router.add_static("/pool/", source.parent)
    site = await webhelp.start(app, "127.0.0.1", 0)
    leech = Swarm(LOOPBACK)
    try:
        torrent = leech.add(hashed.torrent.metainfo, tmp_path / "scratch", sequential=False)
        assert torrent.transfer().web_seed_bytes == 0
        torrent.add_web_seed(f"{site.url}/pool/{source.name}")
        digest = hashlib.sha256()
        async with asyncio.timeout(30):
            # Through read_piece, as the edge reads: the file on disk may lag the
            # finished alert while libtorrent's disk thread still writes it.
            async for piece in torrent.pieces(stall_timeout=20):
                digest.update(piece)
            await torrent.finished.wait()
        assert digest.hexdigest() == hashed.sha256
        moved = torrent.transfer()
        assert moved.web_seed_bytes >= hashed.torrent.size and moved.peer_bytes == 0
        stats = leech.stats()
        assert stats.web_seed_downloaded_bytes == stats.payload_downloaded_bytes
        leech.remove(torrent)
        assert leech.stats().web_seed_downloaded_bytes == moved.web_seed_bytes
    finally:
        leech.close()
        await site.stop()


async def test_deadline_window_comes_first_and_peer_bytes_are_peers(tmp_path: Path) -> None:
    """Rarest-first with a deadline window: the pieces a client waits for arrive before the
    rest; every byte came from a peer."""
    source = _file(tmp_path, "window_1_all.deb", 8 * 1024 * 1024)
    hashed = make_torrent(source)
    seed, leech = Swarm(SwarmSettings(**{**LOOPBACK.__dict__, "role": "seeder"})), Swarm(LOOPBACK)
    try:
        seed.add(hashed.torrent.metainfo, source.parent, seed=True)
        # A slow seed (libtorrent exempts loopback from rate limits unless told not to).
        seed.apply(upload_rate_limit=4 << 20, ignore_limits_on_local_network=False)
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch", sequential=False)
        assert not fetching.status().sequential_download
        middle = fetching.num_pieces // 2
        fetching.stream_window(middle, 4, 0, 10)
        leech.connect_peer(fetching, "127.0.0.1", seed.listen_port)
        async with asyncio.timeout(30):
            await fetching.finished.wait()
        early = fetching.completed[: fetching.num_pieces // 4]
        assert set(range(middle, middle + 4)) <= set(early), fetching.completed[:16]
        moved = fetching.transfer()
        assert moved.web_seed_bytes == 0 and moved.peer_bytes >= hashed.torrent.size
    finally:
        seed.close()
        leech.close()


async def test_stall_is_reported_when_nobody_has_the_file(tmp_path: Path) -> None:
    hashed = make_torrent(_file(tmp_path, "lonely.deb", 200_000))
    leech = Swarm(LOOPBACK)
    try:
        torrent = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        with pytest.raises(TimeoutError, match="stalled"):
            async for _ in torrent.pieces(stall_timeout=0.5):
                pass
    finally:
        leech.close()


async def test_resume_data_round_trips(tmp_path: Path) -> None:
    path = _file(tmp_path, "r.deb", 300_000)
    hashed = make_torrent(path)
    swarm = Swarm(LOOPBACK)
    try:
        torrent = swarm.add(hashed.torrent.metainfo, path.parent, seed=True)
        data = await asyncio.wait_for(torrent.resume_data(), 10)
        assert data.startswith(b"d")
        swarm.remove(torrent)
        again = swarm.add(hashed.torrent.metainfo, path.parent, resume_data=data)
        assert again.handle.is_valid()
    finally:
        swarm.close()


def test_swarm_error_is_an_exception() -> None:
    assert issubclass(SwarmError, Exception)
