"""`aptmesh peer` for real: the edge's start() in the single-machine profile, real apt-get
through it on loopback, in front of the `debrepo` fixture's signed repository."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aptmesh.debrepo import DebRepo, apt_env
from aptmesh_cli.peer import RunningPeer, start_peer, status_main
from aptmesh_edge.app import start
from aptmesh_peer.config import PeerConfig
from aptmesh_peer.policy import SeedDecision
from aptmesh_peer.status import human, render
from tests.edge.conftest import HOST, edge_config, upstream_entry

pytestmark = pytest.mark.integration
StartPeer = Callable[..., Awaitable[RunningPeer]]


@pytest.fixture
async def make_peer(debrepo: DebRepo, tmp_path: Path) -> AsyncIterator[StartPeer]:
    peers: list[RunningPeer] = []

    async def factory(**changes: Any) -> RunningPeer:
        n = len(peers)
        values: dict[str, Any] = {
            "http_port": 0,
            "state_dir": tmp_path / f"state{n}",
            "cache_dir": tmp_path / f"cache{n}",
            "upstreams": (upstream_entry(debrepo),),
            "keyring": debrepo.keyring,
            "log_format": "console",
            **changes,
        }
        peer = await start_peer(PeerConfig(**values))
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        if not peer.stopped:
            await peer.stop()


def listening_addresses() -> set[str]:
    """Local addresses of the listening TCP sockets this process holds (by socket inode:
    /proc/net/tcp lists the whole namespace's)."""
    import os

    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                mine.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in mine:
                found.add(fields[1].rsplit(":", 1)[0])
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them.
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


async def apt_download(repo: DebRepo, proxy: str, root: Path) -> bytes:
    lines = [repo.sources_line(f"http://{HOST}/debian", suite) for suite in repo.suites]
    apt = apt_env(root, lines, {"Acquire::http::Proxy": proxy})
    update = await asyncio.to_thread(apt.run, "apt-get", "update")
    assert "E:" not in update.stderr, update.stderr
    big = max(repo.packages, key=lambda p: p.size)
    await asyncio.to_thread(apt.run, "apt-get", "download", big.name)
    [got] = apt.root.glob(f"{big.name}_*.deb")
    data = got.read_bytes()
    assert hashlib.sha256(data).hexdigest() == big.sha256
    return data


async def test_an_opted_out_peer_serves_apt_on_loopback_and_listens_nowhere_else(
    make_peer: StartPeer, debrepo: DebRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = await make_peer(participation="opted-out")
    assert peer.edge.swarm_side is None and peer.edge.http_url.startswith("http://127.0.0.1:")
    await apt_download(debrepo, peer.edge.http_url, tmp_path / "apt")
    # Every listening socket here is on loopback: no BitTorrent port, no outside port.
    listening = listening_addresses()
    assert listening and listening <= LOOPBACK, listening
    status = peer.govern()
    assert status.from_mirror_bytes >= max(p.size for p in debrepo.packages)
    assert not status.listening and status.gate == "never"
    assert status_main(peer.config) == 0
    out = capsys.readouterr().out
    assert "participation: opted-out" in out and "no listening port" in out


async def test_a_peer_fetches_through_the_sites_edge_first(
    make_peer: StartPeer, debrepo: DebRepo, tmp_path: Path
) -> None:
    site = await start(edge_config(debrepo, tmp_path / "site-edge"))
    try:
        # The peer knows the archive by its own name; only the site's edge can reach it.
        peer = await make_peer(upstreams=(f"http://{HOST}",), edges=(site.http_url,))
        await apt_download(debrepo, peer.edge.http_url, tmp_path / "apt")
        served = site.metrics.registry.get_sample_value(
            "aptmesh_edge_served_bytes_total", {"source": "upstream"}
        )
        big = max(p.size for p in debrepo.packages)
        assert served is not None and served >= big
        # The peer counts those bytes as from the site's edge, apart from the mirror's (the
        # indexes, verified by the peer itself, still count as the mirror's).
        status = peer.govern()
        assert status.from_edges_bytes >= big, status
        assert status.from_mirror_bytes < big and status.from_peers_bytes == 0, status
        assert f"{human(status.from_edges_bytes)} from edges" in render(status)
    finally:
        await site.stop()


def test_status_without_a_running_peer_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status_main(PeerConfig(state_dir=tmp_path)) == 1
    assert "is the peer running?" in capsys.readouterr().err


async def test_apts_proxy_detection_names_the_peer_only_while_it_is_ready(
    make_peer: StartPeer, tmp_path: Path
) -> None:
    """packaging/aptmesh-peer/apt-proxy-detect, pointed at a test env file."""
    import subprocess
    import sys

    from tests.packaging.debs import ROOT

    peer = await make_peer()
    port = peer.edge.http_url.rsplit(":", 1)[1]
    env_file = tmp_path / "peer.env"
    env_file.write_text(f"APTMESH_PEER_HTTP_PORT={port}\n")
    script = (ROOT / "packaging/aptmesh-peer/apt-proxy-detect").read_text()
    detect = tmp_path / "apt-proxy-detect"
    detect.write_text(script.replace('"/etc/aptmesh/peer.env"', repr(str(env_file))))

    def ask() -> str:
        out = subprocess.run(
            [sys.executable, "-I", str(detect), "http://deb.example.org/debian/"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    assert await asyncio.to_thread(ask) == f"http://127.0.0.1:{port}\n"
    await peer.stop()
    assert await asyncio.to_thread(ask) == "DIRECT\n"


async def test_a_contributing_peer_seeds_apts_verified_archives_in_place(
    make_peer: StartPeer, debrepo: DebRepo, tracker: Any, tmp_path: Path
) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    peer = await make_peer(
        participation="contribute",
        tracker_grpc=tracker.grpc_target,
        tracker_announce=tracker.announce_url,
        public_swarm=False,  # the test's tracker only: no DHT, no multicast
        listen_port=0,
        apt_archives=archives,
        seed_hours=1,
    )
    side = peer.edge.swarm_side
    assert side is not None
    side.swarm.apply(stop_tracker_timeout=0)
    # The peer learns the verified indexes as apt updates through it.
    lines = [debrepo.sources_line(f"http://{HOST}/debian", suite) for suite in debrepo.suites]
    apt = apt_env(tmp_path / "apt", lines, {"Acquire::http::Proxy": peer.edge.http_url})
    await asyncio.to_thread(apt.run, "apt-get", "update")
    big, other = sorted(debrepo.packages, key=lambda p: p.size)[-2:][::-1]
    name = big.filename.rsplit("/", 1)[-1]
    pkg, rest = name.split("_", 1)
    # As apt names it with an epoch (%3a), and another file apt believes is `other`.
    kept = archives / f"{pkg}_1%3a{rest}"
    kept.write_bytes(big.path.read_bytes())
    forged = archives / other.filename.rsplit("/", 1)[-1]
    forged.write_bytes(big.path.read_bytes()[: other.size].ljust(other.size, b"\0"))
    (archives / "partial").mkdir()

    assert await peer.seed_archives() == 1
    assert set(peer.archived) == {big.sha256} and peer.archived[big.sha256] == kept
    assert big.sha256 in side.seeding and other.sha256 not in side.seeding
    assert [p.name for p in archives.iterdir() if p.is_file()] != []  # nothing was moved
    assert await peer.seed_archives() == 0  # already seeded: not hashed or added again
    # Seeded for its hour (nobody downloads it here, so no ratio is reached), then retired.
    now = peer.clock()
    assert peer.retire(now) == []
    assert peer.retire(now + timedelta(hours=1)) == [SeedDecision.SEED_TIME_REACHED]
    assert big.sha256 not in side.seeding
    assert await peer.seed_archives() == 0  # retired files are not seeded again
    kept.unlink()  # apt clean
    await peer.seed_archives()
    assert big.sha256 not in side.seeding and not peer.archived


async def test_a_download_only_peer_seeds_nothing(
    make_peer: StartPeer, debrepo: DebRepo, tracker: Any, tmp_path: Path
) -> None:
    peer = await make_peer(
        participation="download-only",
        tracker_grpc=tracker.grpc_target,
        tracker_announce=tracker.announce_url,
        public_swarm=False,
        listen_port=0,
        apt_archives=debrepo.root,
    )
    assert peer.edge.swarm_side is not None
    peer.edge.swarm_side.swarm.apply(stop_tracker_timeout=0)
    assert await peer.seed_archives() == 0
    assert peer.govern().gate == "never"
