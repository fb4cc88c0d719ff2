"""A seeder whose data directory is a real, full disk (a 2 MiB tmpfs): the sync that
cannot store a package fails with a clear error, publishes and seeds nothing of it, leaves
no temporary file, and the next sync, once there is room, succeeds."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aptmesh.debrepo import DebRepo
from aptmesh_seeder.publish import MemoryPublisher

from .conftest import StartSeeder, seeder_config

pytestmark = pytest.mark.xdist_group("full_disk")


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_sync_whose_package_does_not_fit_fails_cleanly_and_the_next_one_succeeds(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder, small_disk: Path
) -> None:
    data_dir = small_disk / "seeder"
    publisher = MemoryPublisher()
    seeder = await start_seeder(
        seeder_config(tmp_path, debrepo, None, data_dir=data_dir), publisher=publisher
    )
    huge = debrepo.package("aptmesh-huge")
    assert huge.size > os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize

    [result] = await seeder.box.sync()
    state = seeder.seeder.state.repository("test")
    assert not result.ok
    assert "No space left on device" in result.error, result.error
    assert huge.filename in result.error or "aptmesh-large" in result.error, result.error
    assert result.kind == "io"
    assert state.last_sync_ok is False
    assert "No space left on device" in (state.last_error or ""), state.last_error
    syncs = "aptmesh_seeder_syncs_total"
    assert counter(seeder.seeder.registry, syncs, repository="test", result="failed") == 1
    assert publisher.records == {}
    assert seeder.seeder.seeding.seeding() == set()
    assert sorted(p for p in (data_dir / "tmp").rglob("*") if p.is_file()) == []
    # A file that did fit may stay (whole, verified, recorded for the next sync), unseeded.
    for path in (data_dir / "files").rglob("*"):
        assert path.is_dir() or seeder.seeder.state.file(path.name) is not None

    # Room again (the operator grew the volume): the next sync fetches and seeds it all.
    remount = ["mount", "-o", "remount,size=16m", str(small_disk)]
    await asyncio.to_thread(subprocess.run, remount, check=True)
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    large = {p.sha256 for p in debrepo.packages if p.swarmed}
    assert set(publisher.records) == large
    assert seeder.seeder.seeding.seeding() == large
    state = seeder.seeder.state.repository("test")
    assert state.last_sync_ok is True
