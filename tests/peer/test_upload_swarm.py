"""The policy's libtorrent settings on real sessions over loopback: a peer that must not
upload (download only, or its gate closed) sends 0 payload bytes to a connected leecher, and
a capped peer's upload stays within its cap (+10 %)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aptmesh.swarm import Swarm, SwarmSettings
from aptmesh.torrent import make_torrent
from aptmesh_peer.policy import Limits, Participation, swarm_plan

pytestmark = pytest.mark.integration
LOOPBACK = SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="edge")
MiB = 1024**2


def upload_settings(limits: Limits) -> dict[str, int | bool | str]:
    """The plan's upload settings only: discovery (DHT, LSD, UPnP) stays off in tests."""
    settings = swarm_plan(limits).libtorrent_settings()
    return {k: v for k, v in settings.items() if not k.startswith("enable_")}


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Swarm, Swarm]]:
    peer, leecher = Swarm(LOOPBACK), Swarm(LOOPBACK)
    yield peer, leecher
    peer.close()
    leecher.close()


async def test_a_download_only_peer_sends_nothing_until_its_gate_opens(
    pair: tuple[Swarm, Swarm], tmp_path: Path
) -> None:
    peer, leecher = pair
    source = tmp_path / "seed" / "quiet_1_all.deb"
    source.parent.mkdir()
    source.write_bytes(os.urandom(MiB))
    hashed = make_torrent(source)
    peer.apply(
        **swarm_plan(Limits(participation=Participation.DOWNLOAD_ONLY)).libtorrent_settings()
    )
    seeding = peer.add(hashed.torrent.metainfo, source.parent, seed=True)
    torrent = leecher.add(hashed.torrent.metainfo, tmp_path / "leech")
    leecher.connect_peer(torrent, "127.0.0.1", peer.listen_port)
    async with asyncio.timeout(20):
        while not torrent.handle.get_peer_info() or not peer.incoming_peers():
            await asyncio.sleep(0.05)
    # What `aptmesh peer status` calls reachable: the leecher dialled the peer, not back.
    assert peer.incoming_peers() == 1 and leecher.incoming_peers() == 0
    # Connected and interested, for two seconds: not one payload byte moves.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert seeding.handle.status().total_payload_upload == 0
        assert torrent.handle.status().total_wanted_done == 0
        await asyncio.sleep(0.1)
    # The same session with uploads allowed (a contributing peer's gate open) delivers.
    peer.apply(**upload_settings(Limits(participation=Participation.CONTRIBUTE)))
    async with asyncio.timeout(30):
        await torrent.finished.wait()


async def test_a_capped_peer_uploads_within_its_cap(
    pair: tuple[Swarm, Swarm], tmp_path: Path
) -> None:
    peer, leecher = pair
    cap = 1 * MiB
    source = tmp_path / "seed" / "capped_1_all.deb"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * MiB))
    hashed = make_torrent(source)
    limits = Limits(participation=Participation.CONTRIBUTE, upload_rate_limit=cap)
    peer.apply(**upload_settings(limits))
    seeding = peer.add(hashed.torrent.metainfo, source.parent, seed=True)
    torrent = leecher.add(hashed.torrent.metainfo, tmp_path / "leech")
    started = time.monotonic()
    leecher.connect_peer(torrent, "127.0.0.1", peer.listen_port)
    async with asyncio.timeout(60):
        await torrent.finished.wait()
    elapsed = time.monotonic() - started
    sent = seeding.handle.status().total_payload_upload
    assert sent >= hashed.torrent.size
    # Unlimited, loopback moves 3 MiB in a few milliseconds.
    assert sent / elapsed <= 1.1 * cap, f"{sent / elapsed / MiB:.2f} MiB/s over a 1 MiB/s cap"
