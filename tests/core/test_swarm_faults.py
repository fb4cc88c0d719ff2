"""The libtorrent wrapper under faults: bad pieces are reported, rate limits bind local peers.

Real sessions on loopback. The bad peer is a plain libtorrent session of the
test's own: it checks a good file, then the file's bytes change under it, so
everything it uploads from then on fails the piece hashes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import libtorrent as lt

from aptmesh.swarm import Swarm, SwarmSettings, SwarmTorrent
from aptmesh.testing import wait_until
from aptmesh.torrent import make_torrent

LOOPBACK = SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="edge")
KiB = 1024


def _file(directory: Path, name: str, size: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


async def test_every_bad_piece_is_reported(tmp_path: Path) -> None:
    source = _file(tmp_path / "bad", "big_1.0_amd64.deb", 1024 * KiB)
    hashed = make_torrent(source)
    bad = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False})
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(hashed.torrent.metainfo)
    atp.save_path = str(source.parent)
    handle = bad.add_torrent(atp)
    failed: list[SwarmTorrent] = []
    leech = Swarm(LOOPBACK, on_hash_failed=failed.append)
    try:
        await wait_until(lambda: handle.status().is_seeding, within=10.0, what="bad peer ready")
        with source.open("r+b") as f:  # libtorrent checked it; now every byte changes
            f.write(os.urandom(hashed.torrent.size))
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        leech.connect_peer(fetching, "127.0.0.1", bad.listen_port())
        await wait_until(lambda: bool(failed), within=20.0, what="a bad piece reported")
        assert set(failed) == {fetching} and fetching.hash_failures == len(failed)
    finally:
        leech.close()
        bad.remove_torrent(handle)
        del bad


async def test_the_upload_rate_limit_binds_peers_on_local_networks(tmp_path: Path) -> None:
    limit, size = 256 * KiB, 512 * KiB
    source = _file(tmp_path / "seed", "mid_1.0_amd64.deb", size)
    hashed = make_torrent(source)
    seed = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, upload_rate_limit=limit))
    leech = Swarm(LOOPBACK)
    try:
        seed.add(hashed.torrent.metainfo, source.parent, seed=True)
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        began = time.monotonic()
        leech.connect_peer(fetching, "127.0.0.1", seed.listen_port)
        async with asyncio.timeout(30):
            await fetching.finished.wait()
        took = time.monotonic() - began
        # 2 s at the limit; libtorrent lets a burst through first, so allow some slack. A
        # loopback peer outside the limit gets the file in a few milliseconds.
        assert took >= 0.6 * size / limit, f"{size} bytes in {took:.2f} s past a {limit} B/s limit"
    finally:
        seed.close()
        leech.close()
