"""The fault drills: each builds its mesh, injects one fault, and returns its table row.

Every drill ends with the checker (`harness.corrupt_entries`) and reports what
it measured; the assertions are the tests' (test_drills.py) and the table's
(`python -m tests.drills`). A drill takes a `Size`: small in `make test`,
full in `make drills`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libtorrent as lt

from aptmesh.debian import parse_release, verify_inrelease
from aptmesh.debrepo import DebRepo, Misbehaviour, PackageSpec
from aptmesh.torrent import make_torrent
from tests.drills.harness import (
    DrillMesh,
    Line,
    Row,
    Size,
    alternate,
    apt_env_for,
    corrupt_entries,
    drill_mesh,
    info_hash,
    run_apt,
    run_apts,
    signed_files,
)
from tests.fixtures.disks import fill, mounted_tmpfs
from tests.fixtures.mesh import Metrics, http_get, served, wait_for

SWARM_BACK_WITHIN = 30.0  # seconds: the goal for the swarm after a tracker restart
BOTH = (Line.PROXY, Line.MESH)

Drill = Callable[[DebRepo, Path, Size], Row]


def _finish(row: Row, mesh: DrillMesh, earlier: frozenset[str] = frozenset()) -> Row:
    bad = corrupt_entries(mesh, earlier)
    row.corrupt_entries = len(bad)
    row.notes += [f"corrupt entry {path}" for path in bad]
    return row


def fetch(mesh: DrillMesh, edge: int, path: str) -> bytes:
    """A file through an edge in the path-prefix form (`GET /HOST/debian/PATH`), after the
    signed indexes that vouch for it (as apt fetches them: the edge believes a pool file's
    hash only from a Packages file it verified)."""
    repo = mesh.repo
    for index in (repo.INRELEASE, repo.PACKAGES + ".xz", path):
        status, body = http_get(f"{mesh.edge_urls[edge]}/{repo.host}/debian/{index}", 60)
        assert status == 200, f"{index} through edge{edge}: HTTP {status}"
    return body


def fallbacks(before: Metrics, after: Metrics) -> str:
    """The edge's upstream fallbacks between two scrapes, by reason."""
    name = "aptmesh_edge_upstream_fallbacks_total"
    reasons = {dict(labels).get("reason", "") for n, labels, _ in after.samples if n == name}
    counts = {r: after.value(name, reason=r) - before.value(name, reason=r) for r in reasons}
    return ", ".join(f"{r}: {c:.0f}" for r, c in sorted(counts.items()) if c) or "no fallback"


def kill_during_apt(service: str) -> Drill:
    """kill -9 of `service` while apt runs go through both lines; then it comes back."""

    def drill(repo: DebRepo, tmp: Path, size: Size) -> Row:
        with drill_mesh(repo, tmp / "mesh") as mesh:
            edges = mesh.edge_urls
            # Proxy runs can only fail over by hand: they use the edge that is not killed.
            survivor = edges[1] if service == "edge0" else edges[0]
            plan = alternate(BOTH, edges)

            def plan_for(w: int, r: int) -> tuple[Line, list[str]]:
                line, listed = plan(w, r)
                return line, [survivor] if line is Line.PROXY else listed

            row = run_apts(mesh, tmp, size, plan_for, lambda: mesh.kill(service))
            row.drill = f"kill -9 {service} under apt"
            began = time.monotonic()
            mesh.start(service)
            row.recovery_s = time.monotonic() - began
            return _finish(row, mesh)

    return drill


def tracker_restart(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """kill -9 and restart the tracker; the time until every swarmed file has its seed again,
    then a large-file fetch by an edge that has not cached it comes from the swarm."""
    row = Row("tracker restart: swarm back")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        mesh.kill("tracker")
        began = time.monotonic()
        mesh.start("tracker")
        try:
            wait_for(
                lambda: all(c >= 1 for c in mesh.seeds().values()),
                "every swarmed file to have a seed at the restarted tracker",
                timeout=SWARM_BACK_WITHIN,
            )
            row.recovery_s = time.monotonic() - began
        except AssertionError:
            row.notes.append(f"seeds after {SWARM_BACK_WITHIN:.0f} s: {mesh.seeds()}")
        pkg = repo.package("aptmesh-huge")
        for edge in range(len(mesh.edge_urls)):
            before = mesh.metrics(f"edge{edge}")
            body = fetch(mesh, edge, pkg.filename)
            row.runs += 1
            if hashlib.sha256(body).hexdigest() != pkg.sha256:
                row.corrupt_bytes += len(body)
            after = mesh.metrics(f"edge{edge}")
            if served(after, "swarm") <= served(before, "swarm"):
                row.notes.append(
                    f"edge{edge}: {pkg.name} not from the swarm ({fallbacks(before, after)})"
                )
        return _finish(row, mesh)


def corrupt_seeder_file(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """A byte of a seeded file changes on the seeder's disk (size and mtime kept) while it is
    down; after its restart the seeder must stop seeding those bytes and hold good ones again."""
    row = Row("corrupted seeder file")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        pkg = repo.package("aptmesh-huge")
        held = mesh.seeder_dir / "files" / pkg.sha256[:2] / pkg.sha256
        mesh.kill("seeder")
        st = held.stat()
        with held.open("r+b") as f:
            f.seek(st.st_size // 2)
            byte = f.read(1)
            f.seek(st.st_size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.utime(held, ns=(st.st_atime_ns, st.st_mtime_ns))
        began = time.monotonic()
        mesh.start("seeder")
        try:
            wait_for(lambda: not corrupt_entries(mesh), "the seeder to hold only good files")
            row.recovery_s = time.monotonic() - began
        except AssertionError:
            row.notes.append("the corrupted file is still held and seeded")
        for edge in range(len(mesh.edge_urls)):
            body = fetch(mesh, edge, pkg.filename)
            row.runs += 1
            if hashlib.sha256(body).hexdigest() != pkg.sha256:
                row.corrupt_bytes += len(body)
        return _finish(row, mesh)


MALICIOUS_HOST = "127.0.0.9"


def malicious_peer(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """A BitTorrent peer of the drill's own sends bad pieces of a swarmed file (the seeder is
    down, so the edges meet it); every edge still serves the signed bytes, counts the bad
    pieces in aptmesh_verification_failures_total and bans the peer."""
    row = Row("malicious BitTorrent peer")
    pkg = repo.package("aptmesh-large")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        mesh.kill("seeder")
        bad_dir = tmp / "malicious"
        bad_dir.mkdir()
        bad = bad_dir / os.path.basename(pkg.filename)
        bad.write_bytes(pkg.path.read_bytes())
        session = lt.session(
            {
                "listen_interfaces": f"{MALICIOUS_HOST}:0",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "enable_incoming_utp": False,
                "enable_outgoing_utp": False,
                "allow_multiple_connections_per_ip": True,
            }
        )
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(make_torrent(pkg.path).torrent.metainfo)
        atp.save_path = str(bad_dir)
        atp.trackers = [mesh.announce]
        handle = session.add_torrent(atp)
        try:
            wait_for(lambda: handle.status().is_seeding, "the malicious peer to seed")
            # Now that libtorrent checked the file, its bytes change under it: what it
            # uploads from here on fails every piece hash.
            with bad.open("r+b") as f:
                f.write(os.urandom(pkg.size))
            wait_for(lambda: mesh.seeds()[pkg.name] >= 1, "the tracker to list the malicious peer")
            for edge in range(len(mesh.edge_urls)):
                name = f"edge{edge}"
                failures = mesh.metrics(name).value(
                    "aptmesh_verification_failures_total", kind="piece"
                )
                body = fetch(mesh, edge, pkg.filename)
                row.runs += 1
                if hashlib.sha256(body).hexdigest() != pkg.sha256:
                    row.corrupt_bytes += len(body)
                after = mesh.metrics(name).value(
                    "aptmesh_verification_failures_total", kind="piece"
                )
                if after <= failures:
                    row.notes.append(f"{name}: bad pieces not counted as verification failures")
            row.recovery_s = None
        finally:
            session.remove_torrent(handle)
            del session
        return _finish(row, mesh)


# --- upstream faults and disks -------------------------------------------------------------------


def _apt(row: Row, line: Line, tmp: Path, mesh: DrillMesh, edges: list[str], what: str) -> None:
    """One apt run (update and download) counted in `row`."""
    outcome = run_apt(apt_env_for(line, tmp, mesh.repo, edges), mesh.repo)
    row.runs += 1
    row.apt_failures += not outcome.ok
    row.hung += outcome.hung
    row.corrupt_bytes += outcome.corrupt_bytes
    if not outcome.ok:
        row.notes.append(f"{what}, {line.value} via {edges[0]}: {outcome.detail}")


# Edges that ask the mirror for every index (FreshIndexMaxAge 0): a drill's generations change
# within seconds, not within the default 27 s.
NO_FREEZE = ("--index-freeze-seconds", "0")


def _inrelease_date(data: bytes, repo: DebRepo) -> datetime | None:
    return parse_release(verify_inrelease(data, repo.keyring)).date


def replayed_inrelease(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """After the edges saw a newer generation, the mirror serves the older InRelease again
    (validly signed, with a Last-Modified in the future); no edge may serve it, and once the
    mirror is fixed every edge serves the newest again (not stuck behind 304s)."""
    row = Row("replayed older InRelease")
    mine = repo.copy(tmp / "repo" / "debian")
    mine.resign(date=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    mine.server.start()
    try:
        with drill_mesh(mine, tmp / "mesh", edge_args=NO_FREEZE) as mesh:
            for edge, url in enumerate(mesh.edge_urls):
                _apt(row, Line.PROXY, tmp / f"apt-old-{edge}", mesh, [url], "old generation")
            old = mine.read(mine.INRELEASE)
            before = frozenset(signed_files(mine))
            mine.resign()
            for edge, url in enumerate(mesh.edge_urls):
                _apt(row, Line.PROXY, tmp / f"apt-new-{edge}", mesh, [url], "new generation")
            newest = _inrelease_date(mine.read(mine.INRELEASE), mine)
            future = time.time() + 86400
            mine.server.misbehave(mine.INRELEASE, Misbehaviour(body=old, last_modified=future))
            for stage in ("replayed", "fixed"):
                for edge in range(len(mesh.edge_urls)):
                    status, body = http_get(
                        f"{mesh.edge_urls[edge]}/{mine.host}/debian/{mine.INRELEASE}", 30
                    )
                    row.runs += 1
                    served_date = _inrelease_date(body, mine) if status == 200 else None
                    if status == 200 and served_date != newest:
                        row.notes.append(
                            f"edge{edge} served an InRelease of {served_date} after {newest} "
                            f"({stage} mirror)"
                        )
                mine.server.behave()
            return _finish(row, mesh, before)
    finally:
        mine.close()


def mixed_generation(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """A republish, then the mirror answers 500 for the indexes below InRelease: apt through
    an edge must see one whole generation (the old, or the new), never the new InRelease with
    the old Packages (apt: "File has unexpected size", exit 100)."""
    row = Row("mixed generation (republish, then 500s)")
    mine = repo.copy(tmp / "repo" / "debian")
    mine.server.start()
    try:
        with drill_mesh(mine, tmp / "mesh", edge_args=NO_FREEZE) as mesh:
            edges = mesh.edge_urls
            for edge, url in enumerate(edges):
                _apt(row, Line.PROXY, tmp / f"apt-old-{edge}", mesh, [url], "old generation")
            before = frozenset(signed_files(mine))
            mine.add_package(PackageSpec("aptmesh-drill", "1.0-1", 30 * 1024))
            mine.server.misbehave(f"{mine.DISTS}/main/*", Misbehaviour(status=500))
            for r in range(size.rounds):
                line = BOTH[r % 2]
                listed = [edges[r % len(edges)]] if line is Line.PROXY else list(edges)
                _apt(row, line, tmp / f"apt-mixed-{r}", mesh, listed, "indexes failing")
            mine.server.behave()
            return _finish(row, mesh, before)
    finally:
        mine.close()


def full_disk(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """An edge's cache is on a small disk (2 MiB, smaller than the cache limit and than one
    package): apt through it works while the disk fills; then, the disk full, the edge is
    killed and must start again, say so, and serve apt (caching nothing)."""
    row = Row("full cache disk")
    with mounted_tmpfs(tmp / "small") as disk:
        cache = disk / "cache"
        with drill_mesh(repo, tmp / "mesh", caches=[cache]) as mesh:
            edge0 = [mesh.edge_urls[0]]
            _apt(row, Line.PROXY, tmp / "apt-filling", mesh, edge0, "disk filling")
            fill(disk)
            mesh.kill("edge0")
            began = time.monotonic()
            try:
                mesh.start("edge0")
            except AssertionError as exc:
                row.notes.append(f"edge0 did not start on a full disk: {str(exc)[-300:]}")
                return _finish(row, mesh)
            row.recovery_s = time.monotonic() - began
            for r in range(size.rounds):
                _apt(row, Line.PROXY, tmp / f"apt-full-{r}", mesh, edge0, "disk full")
            return _finish(row, mesh)


DRILLS: dict[str, Drill] = {
    "kill_tracker": kill_during_apt("tracker"),
    "kill_seeder": kill_during_apt("seeder"),
    "kill_edge": kill_during_apt("edge0"),
    "tracker_restart": tracker_restart,
    "corrupt_seeder_file": corrupt_seeder_file,
    "malicious_peer": malicious_peer,
    "replayed_inrelease": replayed_inrelease,
    "mixed_generation": mixed_generation,
    "full_disk": full_disk,
}

__all__ = ["DRILLS", "Drill", "info_hash"]
