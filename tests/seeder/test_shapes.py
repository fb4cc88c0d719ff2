"""A real seeder (real tracker, real libtorrent) takes every repository shape apt takes.

Each shape of `tests.fixtures.debrepo.SHAPES` is built, served on loopback and
synced once: the sync succeeds, and exactly the files at or over the
threshold (packages, and source tarballs where the repository has Sources) are
fetched once, verified, seeded and published to the tracker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from aptmesh.debrepo import DebRepo, RepoFile, RepoPackage
from aptmesh_seeder.publish import MemoryPublisher
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.fixtures.debrepo import SHAPES, ShapedRepo

from .conftest import StartSeeder, repo_spec, seeder_config


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


def _spec_for(repo: DebRepo, name: str) -> str:
    arches = "amd64 all" + (" source" if SHAPES[name].sources else "")
    parts = {"suites": " ".join(repo.suites), "architectures": arches}
    if repo.components:
        parts["components"] = " ".join(repo.components)
    return repo_spec(repo, **parts)


def _files(repo: DebRepo, name: str) -> list[RepoPackage | RepoFile]:
    files: list[RepoPackage | RepoFile] = list(repo.packages)
    for source in SHAPES[name].sources:
        files += repo.source_files(source.name)
    return files


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_every_shape_seeds_its_large_files(
    name: str,
    shaped_repo: ShapedRepo,
    tmp_path: Path,
    tracker: RunningTracker,
    start_seeder: StartSeeder,
) -> None:
    repo = shaped_repo(name)
    config = seeder_config(tmp_path, repo, tracker, repositories=(_spec_for(repo, name),))
    seeder = await start_seeder(config)
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    files = _files(repo, name)
    large = {f.sha256 for f in files if f.swarmed}
    assert large and len(large) < len(files)
    assert seeder.seeder.seeding.seeding() == large
    async with TrackerClient(tracker.grpc_target) as client:
        found = await client.get_many([f.sha256 for f in files])
    assert set(found.records) == large
    for file in files:
        assert repo.server.requests(file.filename) == (1 if file.swarmed else 0), file.filename
        if file.swarmed:
            assert found.records[file.sha256].upstream_urls == (file.url,)


async def test_release_gpg_is_verified_when_there_is_no_inrelease(
    shaped_repo: ShapedRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    repo = shaped_repo("detached-only")
    seeder = await start_seeder(seeder_config(tmp_path, repo, None), publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert result.ok, result.error
    assert repo.server.requests(repo.INRELEASE) == 1  # tried first, as apt does
    assert repo.server.requests(repo.RELEASE_GPG) == 1
    # The next poll goes straight to Release, conditionally: unchanged, nothing more fetched.
    repo.server.reset_counters()
    [again] = await seeder.box.sync()
    assert again.result == "unchanged"
    assert repo.server.requests(repo.INRELEASE) == 0
    assert [r.status for r in repo.server.log] == [304]
    # A Release changed under its old Release.gpg is refused.
    (repo.root / repo.RELEASE).write_bytes(
        repo.read(repo.RELEASE).replace(b"Label: aptmesh-test", b"Label: forged-label")
    )
    [forged] = await seeder.box.sync()
    assert (forged.result, forged.kind) == ("failed", "signature")


async def test_indexes_listed_but_absent_are_skipped_once_with_a_metric(
    shaped_repo: ShapedRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    repo = shaped_repo("vendor-absent-indexes")  # only main/binary-all/Packages exists
    spec = repo_spec(repo, components="main contrib", architectures="amd64 arm64 all")
    config = seeder_config(tmp_path, repo, None, repositories=(spec,))
    seeder = await start_seeder(config, publisher=MemoryPublisher())
    with structlog.testing.capture_logs() as logs:
        [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    [absent] = [e for e in logs if e["event"] == "indexes_absent"]
    assert absent["indexes"] == [
        "dists/stable/main/binary-amd64/Packages",
        "dists/stable/main/binary-arm64/Packages",
        "dists/stable/contrib/binary-amd64/Packages",
        "dists/stable/contrib/binary-arm64/Packages",
    ]
    assert _value(seeder.seeder.registry, "aptmesh_seeder_absent_indexes", repository="test") == 4
    assert seeder.seeder.seeding.seeding() == {repo.package("aptmesh-big").sha256}
    assert seeder.box.healthy()


@pytest.mark.parametrize(
    ("name", "by_hash"),
    [("inrelease-only", True), ("by-hash-unannounced", False), ("no-by-hash", False)],
)
async def test_indexes_come_by_hash_only_when_release_offers_it(
    name: str, by_hash: bool, shaped_repo: ShapedRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    repo = shaped_repo(name)
    seeder = await start_seeder(seeder_config(tmp_path, repo, None), publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert result.ok, result.error
    index_requests = [r.path for r in repo.server.log if "/binary-amd64/" in r.path]
    assert len(index_requests) == 1
    assert ("/by-hash/SHA256/" in index_requests[0]) is by_hash


async def test_a_listed_variant_the_mirror_lacks_falls_back_to_the_next(
    debrepo: DebRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    for path in debrepo.index_paths():  # the .xz file and its by-hash copies are gone
        data = debrepo.read(path)
        if path.endswith(".xz") or (data.startswith(b"\xfd7zXZ") and "/by-hash/" in path):
            (debrepo.root / path).unlink()
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    gz = debrepo.release().files["main/binary-amd64/Packages.gz"].sha256
    tried = [
        (r.path.rsplit("/", 1)[-1], r.status) for r in debrepo.server.log if "/binary-" in r.path
    ]
    xz = debrepo.release().files["main/binary-amd64/Packages.xz"].sha256
    assert tried == [(xz, 404), ("Packages.xz", 404), (gz, 200)]
    assert seeder.seeder.seeding.seeding() == {p.sha256 for p in debrepo.packages if p.swarmed}


async def test_a_release_dated_in_the_future_is_refused_like_apt_does(
    debrepo: DebRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    debrepo.resign(date=datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert (result.result, result.kind) == ("failed", "signature")
    assert "not valid yet" in result.error


async def test_a_replayed_older_release_is_never_believed_even_after_a_restart(
    debrepo: DebRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    index = MemoryPublisher()
    now = datetime.now(UTC).replace(microsecond=0)
    debrepo.resign(date=now - timedelta(hours=2))
    old_inrelease = debrepo.read(debrepo.INRELEASE)
    config = seeder_config(tmp_path, debrepo, None)
    seeder = await start_seeder(config, publisher=index)
    [first] = await seeder.box.sync()
    assert first.result == "ok", first.error
    # A republish: aptmesh-large leaves the archive.
    large, huge = debrepo.package("aptmesh-large"), debrepo.package("aptmesh-huge")
    debrepo.remove_package("aptmesh-large", delete_file=False)
    debrepo.resign(date=now - timedelta(hours=1))
    [second] = await seeder.box.sync()
    assert second.result == "ok", second.error
    assert seeder.seeder.state.wanted("test") == {huge.sha256}

    # The upstream (or a mirror behind it) serves the older, validly signed InRelease again.
    (debrepo.root / debrepo.INRELEASE).write_bytes(old_inrelease)
    [replayed] = await seeder.box.sync()
    assert (replayed.result, replayed.kind) == ("failed", "replay"), replayed.error
    assert "older than the" in replayed.error
    failures = "aptmesh_verification_failures_total"
    assert _value(seeder.seeder.registry, failures, service="seeder", kind="replay") == 1
    assert seeder.seeder.state.wanted("test") == {huge.sha256}  # the newer generation holds
    assert large.sha256 not in seeder.seeder.state.wanted("test")
    await seeder.stop(0)

    restarted = await start_seeder(config, publisher=index)
    [again] = await restarted.box.sync()
    assert (again.result, again.kind) == ("failed", "replay")
    assert restarted.seeder.state.wanted("test") == {huge.sha256}


@pytest.mark.parametrize("name", ["detached-only", "flat", "sources", "ubuntu"])
async def test_a_local_mirror_of_each_shape_is_seeded_in_place(
    name: str, shaped_repo: ShapedRepo, tmp_path: Path, start_seeder: StartSeeder
) -> None:
    repo = shaped_repo(name)
    spec = _spec_for(repo, name).replace(repo.base_url, str(repo.root), 1)
    config = seeder_config(tmp_path, repo, None, repositories=(spec,))
    seeder = await start_seeder(config, publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert result.result == "ok", result.error
    large = [f for f in _files(repo, name) if f.swarmed]
    assert seeder.seeder.seeding.seeding() == {f.sha256 for f in large}
    for file in large:
        held = seeder.seeder.state.file(file.sha256)
        assert held is not None and held.path == file.path and not held.owned
    assert repo.server.log == []
