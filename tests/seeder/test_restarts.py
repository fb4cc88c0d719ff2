"""Restarts, the seeder's and the tracker's: the mesh is whole again within seconds.

Each test is a finding of the fault drills (issue 15) at the depth where it
lives: a restarted tracker gets the seeder's swarms back at once, not at the
30-minute announce interval; a held file whose bytes changed on disk (size
and mtime kept) is found by the re-hash after a start, dropped and fetched
again; a second process cannot open a data directory in use; readiness says
when the data directory is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.files import DirectoryInUse
from aptmesh.testing import free_port, wait_until
from aptmesh_seeder import app
from aptmesh_seeder.publish import MemoryPublisher
from aptmesh_tracker import app as tracker_app
from aptmesh_tracker.config import TrackerConfig
from tests.fixtures.tracker import TOKEN
from tests.seeder.conftest import StartSeeder, seeder_config


def held_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "files" / sha256[:2] / sha256


async def test_a_restarted_tracker_gets_the_swarms_back_within_seconds(
    tmp_path: Path, debrepo: DebRepo
) -> None:
    config = TrackerConfig(
        grpc_bind=f"127.0.0.1:{free_port()}",
        http_host="127.0.0.1",
        http_port=free_port(),
        db_path=tmp_path / "tracker.sqlite3",
        publish_token=TOKEN,
        announce_interval=1800,  # the default: no announce comes back on its own during a test
        min_interval=60,
    )
    tracker = await tracker_app.start(config, maintain_every=0)
    pkg = debrepo.package("aptmesh-huge")
    seeder = await app.start(seeder_config(tmp_path, debrepo, tracker), poll=False, site_every=0.2)
    try:
        [result] = await seeder.box.sync()
        assert result.ok
        held = seeder.seeder.state.file(pkg.sha256)
        assert held is not None
        info_hash = bytes.fromhex(held.info_hash_v1)
        await wait_until(
            lambda: tracker.peers.scrape(info_hash).complete >= 1, what="first announce"
        )

        await tracker.stop(grace=0)
        tracker = await tracker_app.start(config, maintain_every=0)
        assert tracker.peers.scrape(info_hash).complete == 0  # the peers were in memory
        await wait_until(
            lambda: tracker.peers.scrape(info_hash).complete >= 1,
            within=5.0,
            what="the seeder to announce to the restarted tracker",
        )
    finally:
        assert seeder.seeder.swarm is not None
        seeder.seeder.swarm.apply(stop_tracker_timeout=0)
        await seeder.stop(0)
        await tracker.stop(grace=0)


async def test_a_held_file_corrupted_on_disk_is_dropped_and_fetched_again(
    tmp_path: Path, debrepo: DebRepo
) -> None:
    config = seeder_config(tmp_path, debrepo, None, poll_interval=3600.0)
    pkg = debrepo.package("aptmesh-huge")
    publisher = MemoryPublisher()
    first = await app.start(config, publisher=publisher, poll=False)
    [result] = await first.box.sync()
    assert result.ok
    await first.stop(0)

    path = held_path(config.data_dir, pkg.sha256)
    st = path.stat()
    with path.open("r+b") as f:  # one byte flips; size and mtime stay as verified
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    fetched = debrepo.server.requests(pkg.filename)

    second = await app.start(config, publisher=publisher)  # polling: the wake fetches it again
    try:

        def good_again() -> bool:
            try:
                return hashlib.sha256(path.read_bytes()).hexdigest() == pkg.sha256
            except FileNotFoundError:
                return False  # dropped, not fetched again yet

        await wait_until(good_again, within=10.0, what="the corrupted file to be fetched again")
        assert debrepo.server.requests(pkg.filename) == fetched + 1
        failures = second.seeder.registry.get_sample_value(
            "aptmesh_verification_failures_total", {"service": "seeder", "kind": "held_file"}
        )
        assert failures == 1
        await wait_until(lambda: pkg.sha256 in second.seeder.seeding.seeding(), what="seeded")
    finally:
        await second.stop(0)


async def test_a_second_seeder_on_one_data_directory_is_refused(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    config = seeder_config(tmp_path, debrepo, None)
    await start_seeder(config, publisher=MemoryPublisher())
    with pytest.raises(DirectoryInUse, match=r"seeder data directory .* in use .*pid \d+"):
        app.build(config, publisher=MemoryPublisher(), seed=False)


async def test_readiness_says_when_the_data_directory_is_gone(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    config = seeder_config(tmp_path, debrepo, None)
    seeder = await start_seeder(config, publisher=MemoryPublisher())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{seeder.http_url}/readyz") as response:
            assert response.status == 200
        await asyncio.to_thread(shutil.rmtree, config.data_dir)
        async with http.get(f"{seeder.http_url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["status"] == "data_dir_unusable" and "is gone" in body["error"]
