"""A seeder against the signed repository fixture, a real tracker and real libtorrent sessions."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from aptmesh.debrepo import DebRepo
from aptmesh.swarm import Swarm, SwarmSettings
from aptmesh.testing import FakeClock
from aptmesh_seeder import app
from aptmesh_seeder.publish import MemoryPublisher
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.seeder.conftest import StartSeeder, repo_spec, seeder_config


def _counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


async def test_sync_publishes_every_package_over_the_threshold_and_none_under(
    tmp_path: Path, debrepo: DebRepo, tracker: RunningTracker, start_seeder: StartSeeder
) -> None:
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, tracker))
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    large = [p for p in debrepo.packages if p.swarmed]
    small = [p for p in debrepo.packages if not p.swarmed]
    assert large and small
    async with TrackerClient(tracker.grpc_target) as client:
        found = await client.get_many([p.sha256 for p in debrepo.packages])
    assert set(found.records) == {p.sha256 for p in large}
    assert set(found.missing) == {p.sha256 for p in small}
    for package in large:
        record = found.records[package.sha256]
        assert (record.size, record.name) == (package.size, package.filename.rsplit("/", 1)[1])
        assert record.upstream_urls == (package.url,)
    assert seeder.seeder.seeding.seeding() == {p.sha256 for p in large}
    for package in large:
        held = seeder.seeder.state.file(package.sha256)
        assert held is not None and held.web_seeds == (package.url,)
    # Small files were never fetched; large ones exactly once.
    for package in small:
        assert debrepo.server.requests(package.filename) == 0
    for package in large:
        assert debrepo.server.requests(package.filename) == 1


async def test_a_leech_that_knows_only_the_tracker_downloads_from_the_seeder(
    tmp_path: Path, debrepo: DebRepo, tracker: RunningTracker, start_seeder: StartSeeder
) -> None:
    # No web seed: the bytes can only come from the seeder.
    config = seeder_config(
        tmp_path, debrepo, tracker, repositories=(repo_spec(debrepo, webseed="off"),)
    )
    seeder = await start_seeder(config)
    [result] = await seeder.box.sync()
    assert result.ok, result.error
    package = debrepo.package("aptmesh-huge")
    async with TrackerClient(tracker.grpc_target) as client:
        record = await client.get(package.sha256)
    served_before = debrepo.server.bytes_served(package.filename)
    leech = Swarm(SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="edge"))
    try:
        torrent = leech.add(record.torrent, tmp_path / "leech", trackers=[tracker.announce_url])
        # Read back through libtorrent: verified pieces, whatever its disk writes are doing.
        digest = hashlib.sha256()
        async with asyncio.timeout(30):
            async for piece in torrent.pieces(stall_timeout=20):
                digest.update(piece)
    finally:
        leech.apply(stop_tracker_timeout=0)  # the tracker shares this loop (see conftest)
        leech.close()
    assert digest.hexdigest() == package.sha256
    assert debrepo.server.bytes_served(package.filename) == served_before
    assert seeder.seeder.seeding.stats().payload_uploaded_bytes >= package.size


async def test_tampered_inrelease_is_refused_and_counted(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    debrepo.tamper(debrepo.INRELEASE)
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "signature")
    assert index.records == {} and seeder.seeder.seeding.seeding() == set()
    registry = seeder.seeder.registry
    failures = "aptmesh_verification_failures_total"
    assert _counter(registry, failures, service="seeder", kind="signature") == 1
    assert all(debrepo.server.requests(p.filename) == 0 for p in debrepo.packages)
    assert not seeder.box.healthy()


async def test_packages_disagreeing_with_inrelease_is_refused_and_counted(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    # Every variant and by-hash copy: whichever the seeder fetches disagrees.
    for path in debrepo.index_paths():
        if "/binary-" in path:
            debrepo.tamper(path)
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "index_hash")
    assert index.records == {} and seeder.seeder.seeding.seeding() == set()
    registry = seeder.seeder.registry
    failures = "aptmesh_verification_failures_total"
    assert _counter(registry, failures, service="seeder", kind="index_hash") == 1
    assert all(debrepo.server.requests(p.filename) == 0 for p in debrepo.packages)


async def test_package_disagreeing_with_packages_is_refused_and_nothing_is_published(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    bad = debrepo.package("aptmesh-large")
    debrepo.tamper(bad.filename)
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "package_hash")
    # The good large package was fetched too, but nothing of this sync is published or seeded.
    assert index.records == {} and seeder.seeder.seeding.seeding() == set()
    registry = seeder.seeder.registry
    failures = "aptmesh_verification_failures_total"
    assert _counter(registry, failures, service="seeder", kind="package_hash") == 1
    assert not list((tmp_path / "seeder" / "files").rglob(bad.sha256))
    assert not list((tmp_path / "seeder" / "tmp").glob("*"))


async def test_restart_re_downloads_nothing_and_re_hashes_nothing(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    config = seeder_config(tmp_path, debrepo, None)
    first = await start_seeder(config, publisher=index)
    [result] = await first.box.sync()
    assert result.ok and result.hashed_bytes > 0
    held = first.seeder.seeding.seeding()
    assert held
    assert all(first.seeder.state.file(sha).resume for sha in held)  # type: ignore[union-attr]
    await first.stop(0)
    debrepo.server.reset_counters()

    second = await start_seeder(config, publisher=index)
    # Seeding again straight from the state, before any sync.
    assert second.seeder.seeding.seeding() == held
    assert second.box.ready
    [again] = await second.box.sync()
    assert again.result == "unchanged"
    assert (again.fetched_bytes, again.hashed_bytes) == (0, 0)
    registry = second.seeder.registry
    assert _counter(registry, "aptmesh_seeder_hashed_bytes_total") == 0
    assert _counter(registry, "aptmesh_seeder_upstream_bytes_total", kind="package") == 0
    assert all(debrepo.server.bytes_served(p.filename) == 0 for p in debrepo.packages)
    assert debrepo.server.bytes_served() == 0  # InRelease answered 304


async def test_a_package_removed_upstream_stops_being_seeded_after_the_grace_period(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder, clock: FakeClock
) -> None:
    index = MemoryPublisher()
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert result.ok
    gone = debrepo.package("aptmesh-large")
    stored = seeder.seeder.state.file(gone.sha256)
    assert stored is not None and stored.owned and stored.path.exists()
    debrepo.remove_package("aptmesh-large")

    clock.advance(60)
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    assert gone.sha256 in seeder.seeder.seeding.seeding()  # within the grace period
    clock.advance(3600 - 1)
    await seeder.box.sync()
    assert gone.sha256 in seeder.seeder.seeding.seeding()
    clock.advance(1)
    await seeder.box.sync()
    assert gone.sha256 not in seeder.seeder.seeding.seeding()
    assert not stored.path.exists()
    assert seeder.seeder.state.file(gone.sha256) is None
    assert debrepo.package("aptmesh-huge").sha256 in seeder.seeder.seeding.seeding()


async def test_local_mirror_is_seeded_in_place(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    spec = f"mirror={debrepo.root};suites={debrepo.suite};webseed={debrepo.base_url}"
    config = seeder_config(tmp_path, debrepo, None, repositories=(spec,))
    seeder = await start_seeder(config, publisher=index)
    debrepo.server.reset_counters()
    [result] = await seeder.box.sync()
    assert result.ok, result.error
    assert result.fetched_bytes == 0
    assert debrepo.server.bytes_served() == 0
    large = [p for p in debrepo.packages if p.swarmed]
    assert set(index.records) == {p.sha256 for p in large}
    for package in large:
        held = seeder.seeder.state.file(package.sha256)
        assert held is not None and held.path == package.path and not held.owned
        assert index.records[package.sha256].upstream_urls == (package.url,)
    assert not list((tmp_path / "seeder").rglob("*.deb"))
    assert not (tmp_path / "seeder" / "files").exists()


async def test_an_unreachable_index_fails_the_sync_and_the_next_one_needs_no_download(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    index.fail = True
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "publish")
    assert seeder.seeder.seeding.seeding() == set()
    registry = seeder.seeder.registry
    assert (
        _counter(registry, "aptmesh_verification_failures_total", service="seeder", kind="publish")
        == 0
    )
    index.fail = False
    [result] = await seeder.box.sync()
    assert result.result == "ok" and result.fetched_bytes == 0 and result.hashed_bytes == 0
    large = {p.sha256 for p in debrepo.packages if p.swarmed}
    assert set(index.records) == large and seeder.seeder.seeding.seeding() == large


async def test_budget_and_patterns_narrow_what_is_fetched(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    huge, large = debrepo.package("aptmesh-huge"), debrepo.package("aptmesh-large")
    config = seeder_config(tmp_path, debrepo, None, budget_bytes=huge.size + large.size - 1)
    seeder = await start_seeder(config, publisher=index)
    [result] = await seeder.box.sync()
    assert result.plan is not None
    assert [c.package for c in result.plan.selected] == ["aptmesh-huge"]
    assert [c.package for c in result.plan.budget_cut] == ["aptmesh-large"]
    assert set(index.records) == {huge.sha256}
    assert debrepo.server.requests(large.filename) == 0
    registry = seeder.seeder.registry
    cut = _counter(registry, "aptmesh_seeder_budget_cut_bytes", repository="test")
    assert cut == large.size
    await seeder.stop(0)

    narrowed = seeder_config(tmp_path / "b", debrepo, None, exclude=("*-huge",), sections=("net",))
    other = await start_seeder(narrowed, publisher=MemoryPublisher())
    [result] = await other.box.sync()
    assert result.plan is not None
    assert [c.package for c in result.plan.selected] == ["aptmesh-large"]


async def test_the_service_polls_on_its_own(
    tmp_path: Path, debrepo: DebRepo, clock: FakeClock
) -> None:
    config = seeder_config(tmp_path, debrepo, None, poll_interval=0.05)
    running = await app.start(config, clock=clock, publisher=MemoryPublisher())
    try:
        syncs = "aptmesh_seeder_syncs_total"
        registry = running.seeder.registry
        async with asyncio.timeout(20):
            while _counter(registry, syncs, repository="test", result="unchanged") < 2:
                await asyncio.sleep(0.02)
        assert _counter(registry, syncs, repository="test", result="ok") == 1
    finally:
        await running.stop(0)
    assert running.poller is not None and running.poller.done()


async def test_a_mirror_file_changed_since_it_was_verified_is_verified_again(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    spec = f"mirror={debrepo.root};suites={debrepo.suite}"
    config = seeder_config(tmp_path, debrepo, None, repositories=(spec,))
    first = await start_seeder(config, publisher=MemoryPublisher())
    [result] = await first.box.sync()
    assert result.ok
    await first.stop(0)
    changed = debrepo.package("aptmesh-large")
    os.utime(changed.path, ns=(1, 1))

    second = await start_seeder(config, publisher=MemoryPublisher())
    assert changed.sha256 not in second.seeder.seeding.seeding()
    [result] = await second.box.sync()
    assert result.result == "ok" and result.hashed_bytes == changed.size
    assert changed.sha256 in second.seeder.seeding.seeding()


async def test_an_expired_inrelease_is_refused_like_apt_does(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder, clock: FakeClock
) -> None:
    index = MemoryPublisher()
    clock.advance(8 * 86400)  # the fixture's InRelease is valid for 7 days
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=index)
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "signature")
    assert "Valid-Until" in result.error
    assert index.records == {}
