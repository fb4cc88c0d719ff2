"""One generation per suite, never backwards (DESIGN integrity rule 5; issues 14 and 15).

Real apt-get with isolated configurations through the edge's proxy line. A replayed older,
validly signed InRelease is refused and counted, across a restart too, and a future
Last-Modified on it does not pin anything; a republish between a client's InRelease and
its Packages fetches leaves the client on one whole generation (by-hash), or its
immediate retry on the new one (no by-hash: no wait for the freeze window); a new
InRelease never goes out with the old generation's cached Packages.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from aptmesh.debian import FileHash, by_hash_path, dump_release
from aptmesh.debrepo import AptEnv, DebRepo, KiB, PackageSpec, apt_env
from aptmesh_edge.app import RunningEdge
from tests.edge.conftest import HOST, EdgeFactory, get, metric, prefix_url
from tests.fixtures.debrepo import ShapedRepo
from tests.fixtures.faulty import Fault, FaultyFactory, FaultyUpstream

NEW = PackageSpec("aptmesh-republished", "1.0-1", 4 * KiB)


def _apt(root: Path, repo: DebRepo, edge: RunningEdge, **extra: str) -> AptEnv:
    return apt_env(
        root,
        repo.sources_line(f"http://{HOST}/debian"),
        {"Acquire::http::Proxy": edge.http_url, **extra},
    )


def _served_inrelease(apt: AptEnv) -> bytes:
    found = list(apt.lists.glob("*_InRelease"))
    assert len(found) == 1, list(apt.lists.iterdir())
    return found[0].read_bytes()


def _lists_name(apt: AptEnv, name: str) -> bool:
    """Whether the client's Packages lists know package `name`."""
    return any(f"Package: {name}\n" in p.read_text() for p in apt.lists.glob("*_Packages"))


def _ago(**delta: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(**delta)


async def _update(apt: AptEnv, *, check: bool = True) -> tuple[int, str]:
    proc = await asyncio.to_thread(apt.run, "apt-get", "update", check=check)
    return proc.returncode, proc.stderr


def _replay(repo: DebRepo, files: dict[str, bytes]) -> None:
    """Serve an older generation's files again, dated a day ahead (a broken mirror)."""
    future = time.time() + 86400
    for path, data in files.items():
        target = repo.root / path
        target.write_bytes(data)
        os.utime(target, (future, future))


async def test_a_replayed_older_inrelease_is_refused_across_restarts(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path
) -> None:
    debrepo.resign(date=_ago(hours=3))
    old = [debrepo.INRELEASE, *(debrepo.PACKAGES + s for s in ("", ".gz", ".xz"))]
    first = {path: debrepo.read(path) for path in old}
    cache = tmp_path / "cache"
    edge = await make_edge(cache_dir=cache, index_freeze_seconds=0.0)
    await _update(_apt(tmp_path / "a", debrepo, edge))

    debrepo.add_package(NEW)
    debrepo.resign(date=_ago(hours=2))
    newer = debrepo.read(debrepo.INRELEASE)
    b = _apt(tmp_path / "b", debrepo, edge)
    await _update(b)
    assert _served_inrelease(b) == newer

    _replay(debrepo, first)
    c = _apt(tmp_path / "c", debrepo, edge)
    await _update(c)
    assert _served_inrelease(c) == newer and _lists_name(c, NEW.name)
    kind = {"service": "edge", "kind": "replay"}
    assert metric(edge, "aptmesh_verification_failures_total", **kind) >= 1

    await edge.stop()
    edge = await make_edge(cache_dir=cache, index_freeze_seconds=0.0)
    d = _apt(tmp_path / "d", debrepo, edge)
    await _update(d)
    assert _served_inrelease(d) == newer and _lists_name(d, NEW.name)
    assert metric(edge, "aptmesh_verification_failures_total", **kind) >= 1

    # The mirror is fixed (a newer generation, files dated before the replay's future date):
    # nothing of the replay pins the edge through 304s.
    debrepo.resign(date=_ago(hours=1))
    for path in old:
        os.utime(debrepo.root / path, (time.time() - 60, time.time() - 60))
    e = _apt(tmp_path / "e", debrepo, edge)
    await _update(e)
    assert _served_inrelease(e) == debrepo.read(debrepo.INRELEASE)


async def _edge_behind(
    make_edge: EdgeFactory, upstream: FaultyUpstream, **changes: object
) -> RunningEdge:
    return await make_edge(upstreams=(f"{HOST}={upstream.url}",), **changes)


def _is_index(path: str) -> bool:
    return "/by-hash/" in path or path.rsplit("/", 1)[-1].startswith("Packages")


async def test_a_republish_mid_update_keeps_the_client_on_one_generation_by_hash(
    make_edge: EdgeFactory, debrepo: DebRepo, faulty_upstream: FaultyFactory, tmp_path: Path
) -> None:
    """Release offers by-hash: the edge fetches the indexes by the hash its InRelease names,
    so the update succeeds, also for a client that asks by name (`Acquire::By-Hash no`)."""
    debrepo.resign(date=_ago(hours=2))
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream)

    def republish(_: str) -> None:
        debrepo.add_package(NEW)
        debrepo.resign(date=_ago(hours=1))

    for name, by_hash in (("yes", "yes"), ("no", "no")):
        upstream.before(_is_index, republish)
        apt = _apt(tmp_path / name, debrepo, edge, **{"Acquire::By-Hash": by_hash})
        code, stderr = await _update(apt, check=False)
        assert code == 0 and "E:" not in stderr and "W:" not in stderr, stderr
        assert not _lists_name(apt, NEW.name)  # the whole old generation
        debrepo.remove_package(NEW.name)
        debrepo.resign(date=_ago(hours=2, seconds=-1))
        await edge.stop()
        edge = await _edge_behind(make_edge, upstream)


async def test_a_republish_mid_update_without_by_hash_needs_one_immediate_retry(
    make_edge: EdgeFactory,
    shaped_repo: ShapedRepo,
    faulty_upstream: FaultyFactory,
    tmp_path: Path,
) -> None:
    repo = shaped_repo("no-by-hash")
    repo.resign(date=_ago(hours=2))
    upstream = await faulty_upstream(repo)
    # The default freeze window (27 s): the retry must not wait it out.
    edge = await _edge_behind(make_edge, upstream)
    assert edge.config.index_freeze_seconds >= 20

    def republish(_: str) -> None:
        repo.add_package(NEW)
        repo.resign(date=_ago(hours=1))

    upstream.before(_is_index, republish)
    apt = _apt(tmp_path / "apt", repo, edge)
    started = time.monotonic()
    code, stderr = await _update(apt, check=False)
    assert "unexpected size" not in stderr and "Hash Sum mismatch" not in stderr, stderr
    if code != 0 or "W:" in stderr:
        code, stderr = await _update(apt, check=False)
    assert code == 0 and "E:" not in stderr and "W:" not in stderr, stderr
    assert _served_inrelease(apt) == repo.read(repo.INRELEASE) and _lists_name(apt, NEW.name)
    assert time.monotonic() - started < edge.config.index_freeze_seconds


async def test_a_new_inrelease_never_goes_out_with_old_cached_packages(
    make_edge: EdgeFactory, debrepo: DebRepo, faulty_upstream: FaultyFactory, tmp_path: Path
) -> None:
    """Issue 15's mixed generation: a republish, then upstream 500s for every index. A new
    client gets a clean error for the indexes (never the old Packages under the new
    InRelease: apt fails hard on that), and once the upstream is back, its retry works."""
    debrepo.resign(date=_ago(hours=2))
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream, index_freeze_seconds=0.0)
    # By name, as clients without by-hash ask (a by-hash name cannot be mixed up).
    by_name = {"Acquire::By-Hash": "no"}
    await _update(_apt(tmp_path / "a", debrepo, edge, **by_name))
    debrepo.add_package(NEW)
    debrepo.resign(date=_ago(hours=1))
    upstream.inject(Fault.STATUS_500, _is_index, times=None)
    b = _apt(tmp_path / "b", debrepo, edge, **by_name)
    code, stderr = await _update(b, check=False)
    assert "unexpected size" not in stderr and "Hash Sum" not in stderr, stderr
    assert "502" in stderr, stderr
    upstream.clear()
    code, stderr = await _update(b, check=False)
    assert code == 0 and "E:" not in stderr and "W:" not in stderr, stderr
    assert _lists_name(b, NEW.name)


async def test_an_expired_release_is_refused_as_apt_would(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path
) -> None:
    debrepo.resign(date=_ago(days=2), valid_for=timedelta(days=1))
    edge = await make_edge()
    apt = _apt(tmp_path / "a", debrepo, edge)
    code, stderr = await _update(apt, check=False)
    assert "InRelease  502" in stderr and not list(apt.lists.glob("*_InRelease")), stderr
    kind = {"service": "edge", "kind": "release_date"}
    assert metric(edge, "aptmesh_verification_failures_total", **kind) == 1


# Indexes apt's other targets fetch (apt-file, appstream, command-not-found), beside Packages.
_OTHER_INDEXES = (
    "main/i18n/Translation-en.xz",
    "main/Contents-amd64.gz",
    "main/dep11/Components-amd64.yml.gz",
    "main/cnf/Commands-amd64.xz",
)


def _publish_other_indexes(repo: DebRepo, generation: bytes, date: datetime) -> None:
    """Write `_OTHER_INDEXES` (content tagged with `generation`) and list them in a newly
    signed InRelease dated `date`, as an archive's Release lists them."""
    release = repo.release()
    files = dict(release.files)
    for rel in _OTHER_INDEXES:
        data = b"index " + rel.encode() + b" of generation " + generation + b"\n"
        (repo.root / repo.DISTS / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.root / repo.DISTS / rel).write_bytes(data)
        files[rel] = FileHash(len(data), hashlib.sha256(data).hexdigest())
    text = dump_release(replace(release, date=date, files=files)).encode()
    (repo.root / repo.INRELEASE).write_bytes(repo.key.clearsign(text))


async def test_translations_contents_dep11_and_cnf_follow_their_inrelease(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    _publish_other_indexes(debrepo, b"1", _ago(hours=2))
    edge = await make_edge(index_freeze_seconds=0.0)

    async def fetch_all() -> list[bytes]:
        assert (await get(client, prefix_url(edge, debrepo.INRELEASE)))[0] == 200
        bodies = []
        for rel in _OTHER_INDEXES:
            status, body, _ = await get(client, prefix_url(edge, f"{debrepo.DISTS}/{rel}"))
            assert status == 200, body
            bodies.append(body)
        return bodies

    assert all(b.endswith(b"generation 1\n") for b in await fetch_all())
    asked = {rel: debrepo.server.requests(f"{debrepo.DISTS}/{rel}") for rel in _OTHER_INDEXES}
    # Still listed with the same hash: served from the cache without asking again.
    assert all(b.endswith(b"generation 1\n") for b in await fetch_all())
    assert asked == {
        rel: debrepo.server.requests(f"{debrepo.DISTS}/{rel}") for rel in _OTHER_INDEXES
    }
    # A new generation lists new hashes: each is fetched anew, never the old copy.
    _publish_other_indexes(debrepo, b"2", _ago(hours=1))
    assert all(b.endswith(b"generation 2\n") for b in await fetch_all())
    # One the InRelease does not list is not believed (enforce).
    status, _, _ = await get(client, prefix_url(edge, f"{debrepo.DISTS}/main/i18n/Translation-de"))
    assert status in (404, 502)


async def test_a_replaced_generation_s_indexes_stay_available_by_hash(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    """A client that read the previous InRelease a moment ago asks for its indexes by hash;
    the edge still has them after it moved on, though the upstream removed them."""
    debrepo.resign(date=_ago(hours=2))
    edge = await make_edge(index_freeze_seconds=0.0)
    name = debrepo.PACKAGES + ".xz"
    rel = name.removeprefix(debrepo.DISTS + "/")
    old = debrepo.read(name)
    old_by_hash = f"{debrepo.DISTS}/{by_hash_path(rel, hashlib.sha256(old).hexdigest())}"
    for path in (debrepo.INRELEASE, name):
        assert (await get(client, prefix_url(edge, path)))[0] == 200

    debrepo.add_package(NEW)
    debrepo.resign(date=_ago(hours=1))
    (debrepo.root / old_by_hash).unlink()  # an archive that cleans by-hash files at once
    for path in (debrepo.INRELEASE, name):
        status, body, _ = await get(client, prefix_url(edge, path))
        assert status == 200 and body == debrepo.read(path)

    asked = debrepo.server.requests(old_by_hash)  # the edge fetched it by this hash at first
    status, body, _ = await get(client, prefix_url(edge, old_by_hash))
    assert status == 200 and body == old
    assert debrepo.server.requests(old_by_hash) == asked  # kept, not asked for again
