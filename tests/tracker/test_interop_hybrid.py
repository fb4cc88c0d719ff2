"""A BitTorrent client nobody here wrote downloads one of our hybrid torrents via our tracker.

The torrent is exactly what `make_torrent` makes (v1 + v2 in one `info`), with
the tracker's announce URL added by `Torrent.with_trackers`; the tracker runs
in its default tracked mode, so it answers only because the record was
published. The seed is `aptmesh.swarm.Swarm` in seed mode. DHT, PEX and UDP
trackers are off, everything listens on loopback and no peer is connected by
hand: the client finds the seed only through the tracker.

The client is rtorrent 0.9.8 (libtorrent 0.13.8, Debian's `rtorrent`). It
ignores the v2 keys, and its infohash covers them unchanged: it announces our
v1 infohash. It has no uTP and no local peer discovery, and runs headless with
`system.daemon.set`. The other Debian bookworm clients cannot do this:

- aria2 1.36 computes a wrong v1 infohash (see `test_clients.py`);
- Transmission 3.00 rejects the torrent ("Error parsing .torrent file"). Its
  bencode parser uses quark 0 to mean "no dictionary key pending", and the
  quark of the empty string is 0 (`TR_KEY_NONE`). So the "" key of a BEP 52
  file entry is lost, and the entry's dictionary is then refused as a value
  without a key. Any torrent with a BEP 52 file tree fails; v1-only ones load;
- ctorrent 1.3.4-dnh3.3.2 announces the right infohash but got no piece from
  the libtorrent seed within 15 s (tried twice, not analysed further).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from aptmesh.swarm import Swarm, SwarmSettings
from aptmesh.testing import free_port, wait_until
from aptmesh.torrent import make_torrent
from aptmesh_tracker import wire
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.tracker.conftest import get_bytes, make_file, record_of

SIZE = 1_500_000


async def scrape(
    http: aiohttp.ClientSession, tracker: RunningTracker, info_hash: bytes
) -> wire.ScrapeStats:
    query = wire.encode_scrape_request(wire.ScrapeRequest((info_hash,)))
    body = await get_bytes(http, f"{tracker.http_url}/scrape?{query}")
    return dict(wire.decode_scrape_response(body).files).get(info_hash, wire.ScrapeStats(0, 0, 0))


def rtorrent_config(directory: Path, torrent_file: Path, port: int, done: Path) -> str:
    """rtorrent's settings: loopback only, no DHT, no PEX, no UDP trackers, no session."""
    return "\n".join(
        [
            "system.daemon.set = true",
            f'directory.default.set = "{directory}"',
            f"network.port_range.set = {port}-{port}",
            "network.port_random.set = no",
            "network.bind_address.set = 127.0.0.1",
            "dht.mode.set = disable",
            "protocol.pex.set = no",
            "trackers.use_udp.set = no",
            # touches `done` once every piece has arrived and passed its hash check
            "method.set_key = event.download.finished, aptmesh_done,"
            f' "execute.nothrow=touch,{done}"',
            f'load.start = "{torrent_file}"',
            "",
        ]
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    """Ends rtorrent's process group: SIGTERM (it announces `stopped`), then SIGKILL."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def test_rtorrent_downloads_our_hybrid_torrent_from_a_swarm_seed(
    tracker: RunningTracker,
    client: TrackerClient,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    rtorrent = shutil.which("rtorrent")
    if rtorrent is None:
        pytest.fail("rtorrent is missing: `make sysdeps` installs Debian's rtorrent package")
    path = make_file(tmp_path / "seed", "big_1.0+dfsg-1~bpo12+1_amd64.deb", SIZE, seed=11)
    hashed = make_torrent(path)
    await client.publish(record_of(hashed))
    metainfo = hashed.torrent.with_trackers([tracker.announce_url], [])
    v1 = bytes.fromhex(hashed.torrent.info_hash_v1)
    v2 = bytes.fromhex(hashed.torrent.info_hash_v2_truncated)

    swarm = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder"))
    try:
        swarm.add(metainfo, path.parent, seed=True)

        async def seed_announced() -> bool:
            return (await scrape(http, tracker, v1)).complete == 1

        # rtorrent's first announce then already gets the seed
        await wait_until(seed_announced, within=10, what="the seed's announce")

        home = tmp_path / "rtorrent"
        out, done = home / "download", home / "done"
        out.mkdir(parents=True)
        torrent_file = home / "pkg.torrent"
        torrent_file.write_bytes(metainfo)
        config = home / "rtorrent.rc"
        config.write_text(rtorrent_config(out, torrent_file, free_port(), done))
        log = home / "rtorrent.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                rtorrent,
                "-n",  # no ~/.rtorrent.rc
                "-o",
                f"import={config}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
                cwd=home,
                start_new_session=True,
            )
        try:
            await wait_until(
                lambda: done.exists() or process.returncode is not None,
                within=15,
                what="rtorrent to finish the download",
            )
            assert process.returncode is None, log.read_text(errors="replace")
            data = (out / path.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == hashed.sha256

            # rtorrent announced into the v1 swarm (it has no v2 side): the seed
            # and rtorrent there, the seed alone in the truncated-v2 swarm
            v1_stats, v2_stats = await scrape(http, tracker, v1), await scrape(http, tracker, v2)
            assert v1_stats.complete + v1_stats.incomplete == 2, v1_stats
            assert (v2_stats.complete, v2_stats.incomplete) == (1, 0), v2_stats
        finally:
            await stop(process)
    finally:
        # Swarm.close() blocks this loop while libtorrent announces `stopped` to a
        # tracker served by this same loop: skip that announce instead of waiting
        # out stop_tracker_timeout (5 s).
        swarm.apply(stop_tracker_timeout=0)
        swarm.close()
