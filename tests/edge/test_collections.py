"""Collections end to end: a real tracker, a real seeder, three edges in two zones in front of the
fixture repository, a collection with dependencies and a plain file targeting one zone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aptmesh import collection as col
from aptmesh.debrepo import DebRepo, KiB, MiB, PackageSpec, apt_env
from aptmesh.testing import FakeClock, wait_until
from aptmesh_edge.app import RunningEdge, start
from aptmesh_edge.preheat import Preheater
from aptmesh_seeder import app as seeder_app
from aptmesh_seeder.config import SeederConfig
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.edge.conftest import HOST, edge_config, metric
from tests.fixtures.tracker import TOKEN

LAB, OFFICE = "lab", "office"
TORRENT_BYTES = "aptmesh_torrent_payload_bytes_total"
SOURCE = f"http://{HOST}/debian stable main"
PLAIN_SIZE = 3 * MiB + 12345
LAB_PACKAGES = (
    PackageSpec(
        "lab-app",
        "1.0-1",
        30 * KiB,
        fields=(("Depends", "lab-lib (>= 1.0), mail-agent | lab-missing, lab-data"),),
    ),
    PackageSpec("lab-lib", "1.0-1", 40 * KiB, section="libs"),
    PackageSpec("lab-mta", "2.0", 10 * KiB, fields=(("Provides", "mail-agent"),)),
    PackageSpec("lab-data", "1.0", 2 * MiB, architecture="all"),  # swarmed
    PackageSpec("lab-unrelated", "1.0", 10 * KiB),
)
WANTED = ("lab-app", "lab-lib", "lab-mta", "lab-data")

EdgeMaker = Callable[..., Awaitable[RunningEdge]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_edge(
    debrepo: DebRepo, tracker: RunningTracker, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[EdgeMaker]:
    edges: list[RunningEdge] = []

    async def factory(zone: str, **changes: Any) -> RunningEdge:
        settings: dict[str, Any] = {
            "tracker_grpc": tracker.grpc_target,
            "tracker_announce": (tracker.announce_url,),
            "publish_token": TOKEN,
            "zone": zone,
            "swarm_timeout": 5.0,
            "swarm_stall_seconds": 5.0,
            "collection_poll_seconds": 0,  # the test says when (one test runs the loop)
            "collection_grace_seconds": 600,
        }
        cache_dir = changes.pop("cache_dir", tmp_path / f"edge{len(edges)}")
        config = edge_config(debrepo, cache_dir, **{**settings, **changes})
        edge = await start(config, clock=clock)
        edges.append(edge)
        return edge

    yield factory
    for edge in edges:
        if edge.swarm_side is not None:
            edge.swarm_side.swarm.apply(stop_tracker_timeout=0)
        await edge.stop()


@pytest.fixture
async def seeder(
    debrepo: DebRepo, tracker: RunningTracker, tmp_path: Path
) -> AsyncIterator[seeder_app.RunningSeeder]:
    config = SeederConfig(
        repositories=(f"test={debrepo.base_url};suites={debrepo.suite}",),
        keyring=debrepo.keyring,
        data_dir=tmp_path / "seeder",
        grpc_bind="127.0.0.1:0",
        http_host="127.0.0.1",
        http_port=0,
        listen_host="127.0.0.1",
        listen_port=0,
        tracker_grpc=tracker.grpc_target,
        tracker_announce=(tracker.announce_url,),
        publish_token=TOKEN,
        files_dir=tmp_path / "seeder-files",
        log_format="console",
    )
    config.files_dir.mkdir()  # type: ignore[union-attr]
    running = await seeder_app.start(config, poll=False)
    yield running
    if running.seeder.swarm is not None:
        running.seeder.swarm.apply(stop_tracker_timeout=0)
    await running.stop(0)


@pytest.fixture
async def admin(tracker: RunningTracker) -> AsyncIterator[TrackerClient]:
    async with TrackerClient(tracker.grpc_target, token=TOKEN) as c:
        yield c


def plain_file(repo: DebRepo, name: str, size: int) -> col.PlainFile:
    """A file served by the fixture's server beside the archive (`/debian/files/NAME`)."""
    data = random.Random(name).randbytes(size)
    path = repo.root / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    url = f"http://{HOST}/debian/files/{name}"
    return col.PlainFile(name, hashlib.sha256(data).hexdigest(), size, (url,))


def lab_spec(repo: DebRepo, **changes: Any) -> col.CollectionSpec:
    values: dict[str, Any] = {
        "name": "lab-set",
        "sources": (SOURCE,),
        "packages": ("lab-app",),
        "with_dependencies": True,
        "files": (plain_file(repo, "installer.img", PLAIN_SIZE),),
        "zones": (LAB,),
    }
    values.update(changes)
    return col.CollectionSpec(**values)


async def registered(tracker: RunningTracker, edges: list[RunningEdge]) -> None:
    async def all_listed() -> bool:
        listed = {e.id for e in await asyncio.to_thread(tracker.stores.registry.live_edges, "")}
        return all(e.edge_id() in listed for e in edges)

    await wait_until(all_listed, 10, "every edge registered")
    for edge in edges:
        await edge.refresh_edges()


def preheater(edge: RunningEdge) -> Preheater:
    assert edge.preheater is not None
    return edge.preheater


async def cli(tracker: RunningTracker, *args: str, token: bool = True) -> tuple[int, str, str]:
    """Runs the real `aptmesh collection` command against the tracker."""
    env = {**os.environ, "APTMESH_ADMIN_TOKEN": TOKEN if token else ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aptmesh_cli",
        "collection",
        "--tracker",
        tracker.grpc_target,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def spec_toml(path: Path, spec: col.CollectionSpec) -> Path:
    """The spec as the TOML file an administrator writes."""
    lines = [
        f'name = "{spec.name}"',
        f"sources = {json.dumps(list(spec.sources))}",
        f"packages = {json.dumps(list(spec.packages))}",
        f"with_dependencies = {'true' if spec.with_dependencies else 'false'}",
        f"zones = {json.dumps(list(spec.zones))}",
    ]
    for f in spec.files:
        lines += [
            "[[files]]",
            f'name = "{f.name}"',
            f'sha256 = "{f.sha256}"',
            f"size = {f.size}",
            f'url = "{f.urls[0]}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def holds(edge: RunningEdge, sha256s: list[str]) -> bool:
    return all(s in edge.blobs for s in sha256s)


def pool_requests(repo: DebRepo, names: tuple[str, ...]) -> dict[str, int]:
    return {n: repo.server.requests(repo.package(n).filename) for n in names}


async def test_a_collection_reaches_every_edge_of_its_zone_and_no_other(
    debrepo: DebRepo,
    tracker: RunningTracker,
    seeder: seeder_app.RunningSeeder,
    make_edge: EdgeMaker,
    admin: TrackerClient,
    tmp_path: Path,
) -> None:
    for package in LAB_PACKAGES:
        debrepo.add_package(package)
    await seeder.box.sync()  # seeds the large package and publishes its torrent
    a1, a2, b1 = await make_edge(LAB), await make_edge(LAB), await make_edge(OFFICE)
    await registered(tracker, [a1, a2, b1])
    # The plain file: a directory of the seeder's, which seeds and publishes it.
    image = random.Random(1).randbytes(PLAIN_SIZE)
    (tmp_path / "seeder-files" / "installer.img").write_bytes(image)
    assert seeder.files is not None
    (served,) = await seeder.files.scan()
    assert served.sha256 == hashlib.sha256(image).hexdigest() and served.size == PLAIN_SIZE
    plain = col.PlainFile(served.name, served.sha256, served.size, (served.url,))
    spec = lab_spec(debrepo, files=(plain,))
    code, out, err = await cli(tracker, "define", str(spec_toml(tmp_path / "lab.toml", spec)))
    assert (code, out) == (0, "defined lab-set version 1\n"), err
    code, _, err = await cli(tracker, "status", "lab-set", "--wait", "--deadline", "0.5")
    assert code == 1 and "did not reach every targeted edge" in err
    debrepo.server.reset_counters()

    waiting = asyncio.create_task(cli(tracker, "status", "lab-set", "--wait", "--deadline", "60"))
    await asyncio.gather(*(preheater(e).run_once() for e in (a1, a2, b1)))
    code, out, err = await waiting
    assert code == 0, (out, err)
    assert f"{a1.edge_id()} (lab): 5/5 files" in out and b1.edge_id() not in out
    assert "[##############################] 100% 2/2 edges complete" in out  # plain lines

    wanted = [debrepo.package(n).sha256 for n in WANTED] + [spec.files[0].sha256]
    assert holds(a1, wanted) and holds(a2, wanted)
    assert not any(s in b1.blobs for s in wanted)
    assert debrepo.package("lab-unrelated").sha256 not in a1.blobs
    # The site fetched each small file from outside once; the large one came from the seeder.
    requests = pool_requests(debrepo, WANTED)
    assert all(count <= 1 for count in requests.values()), requests
    assert requests["lab-data"] == 0, requests
    # The plain file and the large package came through the swarm (the seeder, the other edge).
    for edge in (a1, a2):
        await asyncio.to_thread(edge.swarm_side.update_metrics)  # type: ignore[union-attr]
    swarmed = sum(metric(e, TORRENT_BYTES, service="edge", direction="download") for e in (a1, a2))
    assert swarmed >= 2 * (PLAIN_SIZE + 2 * MiB), swarmed
    # Pinned while the collection holds them.
    assert all(a1.blobs.pinned(s) for s in wanted)

    _, statuses = await admin.collection_status("lab-set")
    assert sorted(s.edge_id for s in statuses) == sorted([a1.edge_id(), a2.edge_id()])
    assert all(s.complete and s.files_wanted == 5 for s in statuses), statuses
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{a1.http_url}/_aptmesh/collections") as resp:
            local = await resp.json()
        # The edge's JSON and the tracker's gRPC say the same.
        (from_tracker,) = [s for s in statuses if s.edge_id == a1.edge_id()]
        assert local["collections"] == [col.status_to_json(from_tracker)]
        assert local["collections"][0]["complete"] is True
        # The plain file by name and by hash, verified like a package.
        async with http.get(f"{a2.http_url}/_aptmesh/files/lab-set/installer.img") as resp:
            body = await resp.read()
            assert resp.status == 200 and hashlib.sha256(body).hexdigest() == spec.files[0].sha256
        async with http.get(f"{a2.http_url}/_aptmesh/files/sha256/{spec.files[0].sha256}") as resp:
            assert resp.status == 200 and len(await resp.read()) == PLAIN_SIZE
        async with http.get(f"{b1.http_url}/_aptmesh/files/lab-set/installer.img") as resp:
            assert resp.status == 404

    # A client in the zone installs the packages; the mirror sends no package file again.
    debrepo.server.reset_counters()
    env = apt_env(
        tmp_path / "apt",
        f"deb [signed-by={debrepo.keyring}] {a2.http_url}/{HOST}/debian stable main",
    )
    await asyncio.to_thread(env.run, "apt-get", "update")
    await asyncio.to_thread(env.run, "apt-get", "install", "-y", "--download-only", "lab-app")
    got = sorted(p.name.split("_")[0] for p in env.archives.glob("*.deb"))
    assert got == sorted(WANTED)
    assert pool_requests(debrepo, WANTED) == dict.fromkeys(WANTED, 0)


async def test_a_new_generation_is_preheated_and_the_old_version_unpinned_after_the_grace(
    debrepo: DebRepo,
    tracker: RunningTracker,
    make_edge: EdgeMaker,
    admin: TrackerClient,
    clock: FakeClock,
) -> None:
    for package in LAB_PACKAGES:
        debrepo.add_package(package)
    edge = await make_edge(LAB, collection_poll_seconds=0.2)  # its own loop: no command
    await admin.put_collection(lab_spec(debrepo, files=()))
    old = debrepo.package("lab-lib").sha256
    await wait_until(
        lambda: holds(edge, [debrepo.package(n).sha256 for n in WANTED]), 30, "version 1 held"
    )
    assert edge.blobs.pinned(old)

    new = debrepo.add_package(PackageSpec("lab-lib", "1.1-1", 40 * KiB, section="libs"))
    clock.advance(30)  # past the index freeze: the next poll sees the new InRelease
    await wait_until(lambda: new.sha256 in edge.blobs, 30, "the new lab-lib preheated")
    await wait_until(lambda: preheater(edge).statuses()[0].complete, 10, "complete again")
    assert edge.blobs.pinned(new.sha256) and edge.blobs.pinned(old)  # old: within the grace
    assert preheater(edge).statuses()[0].generations != ()
    clock.advance(601)
    await wait_until(lambda: not edge.blobs.pinned(old), 10, "the old lab-lib unpinned")
    assert edge.blobs.pinned(new.sha256)
    # A deleted collection lets go of everything, after the same grace.
    await admin.delete_collection("lab-set")
    await wait_until(lambda: preheater(edge).statuses() == [], 10, "the collection dropped")
    assert edge.blobs.pinned(new.sha256)
    clock.advance(601)
    await wait_until(lambda: not edge.blobs.pinned(new.sha256), 10, "every file unpinned")


async def test_bad_input_says_why_and_changes_nothing_else(
    debrepo: DebRepo,
    tracker: RunningTracker,
    make_edge: EdgeMaker,
    admin: TrackerClient,
) -> None:
    for package in LAB_PACKAGES:
        debrepo.add_package(package)
    edge = await make_edge(LAB, cache_max_bytes=20 * MiB)
    heater = preheater(edge)
    good = lab_spec(debrepo, files=())
    await admin.put_collection(good)
    await heater.run_once()
    held = {debrepo.package(n).sha256 for n in WANTED}
    assert heater.statuses()[0].complete and holds(edge, list(held))
    blobs_before = edge.blobs.stats().entries

    async def refused(spec: col.CollectionSpec, line: str) -> None:
        stored = await admin.put_collection(spec)
        debrepo.server.reset_counters()
        await heater.run_once()
        status = heater.statuses()[0]
        assert stored.version > 1 and status.version == 1  # still the version it held
        assert not status.complete
        assert any(line in e for e in status.errors), status.errors
        assert edge.blobs.stats().entries == blobs_before  # nothing new fetched or kept
        assert all(edge.blobs.pinned(s) for s in held)  # the previous version stays held
        assert not [r for r in debrepo.server.log if r.path.startswith(("pool/", "files/"))]
        code, out, _ = await cli(tracker, "status", "lab-set")
        assert code == 0 and line in out

    await refused(
        replace(good, packages=("lab-app", "no-such-package")),
        "no-such-package: nothing satisfies it (the indexes have no such package)",
    )
    await refused(
        replace(good, packages=("lab-lib (>= 9)",)),
        "lab-lib (>= 9): nothing satisfies it (the indexes have 1.0-1)",
    )
    await refused(
        replace(good, files=(plain_file(debrepo, "huge.img", 17 * MiB),)),
        "more than 80% of this edge's cache",
    )
    wrong = plain_file(debrepo, "wrong.img", 100 * KiB)
    (debrepo.root / "files" / "wrong.img").write_bytes(b"x" * wrong.size)  # not its SHA-256
    await admin.put_collection(replace(good, files=(wrong,)))
    await heater.run_once()
    status = heater.statuses()[0]
    assert not status.complete and status.files_present == status.files_wanted - 1
    assert any(e.startswith("wrong.img: ") for e in status.errors), status.errors
    assert wrong.sha256 not in edge.blobs and all(s in edge.blobs for s in held)
    async with aiohttp.ClientSession() as http:
        # A client is never given the wrong bytes whole: its connection is cut.
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(f"{edge.http_url}/_aptmesh/files/lab-set/wrong.img") as resp:
                await resp.read()


async def test_the_preheaters_pins_survive_a_restart(
    debrepo: DebRepo,
    tracker: RunningTracker,
    make_edge: EdgeMaker,
    admin: TrackerClient,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    for package in LAB_PACKAGES:
        debrepo.add_package(package)
    await admin.put_collection(lab_spec(debrepo, files=()))
    first = await make_edge(LAB, cache_dir=tmp_path / "kept")
    await preheater(first).run_once()
    held = [debrepo.package(n).sha256 for n in WANTED]
    assert holds(first, held)
    await admin.delete_collection("lab-set")
    await preheater(first).run_once()  # released: unpinned 600 s from now
    await first.stop()

    again = await make_edge(LAB, cache_dir=tmp_path / "kept")
    assert all(again.blobs.pinned(s) for s in held)  # the cache's pins, and the release times
    await preheater(again).run_once()
    assert all(again.blobs.pinned(s) for s in held)
    clock.advance(601)
    await preheater(again).run_once()
    assert not any(again.blobs.pinned(s) for s in held)
    assert holds(again, held)  # unpinned, not deleted: the LRU decides
